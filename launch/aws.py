"""The launch commands' AWS clients: SageMaker, its runtime and CloudWatch Logs.

Each is made from `tfrecord.storage.session(region)`, so it has the same bounded connect/read timeouts
and attempts as the S3 client (an unreachable endpoint is one line within seconds); errors become one
line through `storage.aws_errors`.
"""
from tfrecord import storage


def client(service, region):
    """A boto3 client for `service` ("sagemaker", "sagemaker-runtime" or "logs") in `region` (None: boto3's
    default chain)."""
    return storage.session(region).client(service)
