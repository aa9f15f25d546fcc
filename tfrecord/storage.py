"""Objects under a prefix, on S3 (boto3; AWS_ENDPOINT_URL and friends honoured) or in a local folder."""
import os
import shutil

from tfrecord.errors import UserError


def is_s3(uri):
    return uri.startswith("s3://")


def split_s3(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def join(prefix, *parts):
    return "/".join([prefix.rstrip("/"), *parts]) if is_s3(prefix) else os.path.join(prefix, *parts)


def session(region=None):
    import boto3

    return boto3.Session(region_name=region)


def client(service="s3", region=None):
    return session(region).client(service)


def list_objects(prefix):
    """[(uri, size)] of every object under `prefix`, in key order (as SageMaker streams them)."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        return sorted((f"s3://{bucket}/{o['Key']}", o["Size"]) for page in pages for o in page.get("Contents", []))
    if os.path.isfile(prefix):
        return [(prefix, os.path.getsize(prefix))]
    if not os.path.isdir(prefix):
        return []
    found = [os.path.join(d, f) for d, _, files in os.walk(prefix) for f in files]
    return sorted((path, os.path.getsize(path)) for path in found)


def open_object(uri):
    """A binary stream with `.read(n)` and `.close()`."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return client().get_object(Bucket=bucket, Key=key)["Body"]
    return open(uri, "rb")


def read(uri):
    try:
        with open_object(uri) as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{uri}: not found") from None
    except Exception as e:  # botocore ClientError (NoSuchKey, NoSuchBucket, ...)
        if is_s3(uri) and type(e).__name__ in ("ClientError", "NoSuchKey", "NoSuchBucket"):
            raise UserError(f"{uri}: {e}") from None
        raise


def put_file(path, uri):
    """Copy a local file to `uri` (s3:// or a local path)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client().upload_file(path, bucket, key)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
        shutil.copyfile(path, uri)
