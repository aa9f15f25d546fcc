"""`launch train`: a SageMaker training job (TensorFlow training image, script mode) streaming the dataset.

The request is the one the SDK's ModelTrainer sends (CreateTrainingJob): our `trainer/` + `tfrecord/`
as the source tarball, Pipe/FastFile/File shard channels plus the File-mode `meta` channel, metric
definitions from `trainer.metrics`, managed spot with checkpoints. boto3 honours AWS_ENDPOINT_URL.
"""
import argparse
import io
import json
import os
import sys
import tarfile
import time

from launch import job_config, storage
from tfrecord.errors import UserError, exits_on_user_error

SOURCE_PACKAGES = ("trainer", "tfrecord")
ENTRY_POINT = "sagemaker_entry.py"
DLC_ACCOUNTS = {"af-south-1": "626614931356", "ap-east-1": "871362719292", "eu-south-1": "692866216735",
                "me-south-1": "217643126080", "cn-north-1": "727897471807", "cn-northwest-1": "727897471807"}
DLC_DEFAULT_ACCOUNT = "763104351884"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
FINAL_STATUSES = ("Completed", "Failed", "Stopped")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline launch train", description=__doc__.splitlines()[0])
    job_config.add_job_arguments(p)
    p.add_argument("--role", required=True, help="SageMaker execution role ARN")
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    p.add_argument("--instance-type", default="ml.c5.2xlarge")
    p.add_argument("--volume-size", type=int, default=30, help="GB (File mode downloads the shards here)")
    p.add_argument("--framework-version", default="2.16", help="TensorFlow training image version")
    p.add_argument("--py-version", default="py310")
    p.add_argument("--image-uri", help="override the TensorFlow training image")
    p.add_argument("--spot", action="store_true", help="managed spot training (checkpoints go to S3)")
    p.add_argument("--checkpoint-s3-uri", help="default with --spot: <output-path>/<job>/checkpoints")
    p.add_argument("--max-run", type=int, default=24 * 3600, help="seconds")
    p.add_argument("--max-wait", type=int, help="seconds, spot only (default: twice --max-run)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    return p.parse_args(argv)


def processor(instance_type):
    """"gpu" for the p*/g* instance families, else "cpu"."""
    return "gpu" if instance_type.split(".")[1][0] in "pg" else "cpu"


def dlc_image(repository, tag, region):
    """An AWS Deep Learning Container image URI."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{DLC_ACCOUNTS.get(region, DLC_DEFAULT_ACCOUNT)}.dkr.ecr.{region}.{domain}/{repository}:{tag}"


def image_uri(framework_version, py_version, region, instance_type):
    """The TensorFlow training image for a framework version, Python version, region and CPU/GPU instance."""
    return dlc_image("tensorflow-training", f"{framework_version}-{processor(instance_type)}-{py_version}", region)


def source_tarball():
    """sourcedir.tar.gz: the trainer and the data contract, plus the script-mode entry point."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for package in SOURCE_PACKAGES:
            for name in sorted(os.listdir(os.path.join(root, package))):
                if name.endswith(".py"):
                    tar.add(os.path.join(root, package, name), arcname=f"{package}/{name}")
        tar.add(os.path.join(root, "launch", ENTRY_POINT), arcname=ENTRY_POINT)
    return buffer.getvalue()


def tags(pairs):
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--tag {pair!r}: expected KEY=VALUE")
        out.append({"Key": key, "Value": value})
    return out


def training_job_request(args, manifest, name, source_uri):
    """The CreateTrainingJob request."""
    from trainer.metrics import METRIC_DEFINITIONS

    hps = {**job_config.hyperparameters(args.hp),  # script mode: the toolkit JSON-decodes sagemaker_* values
           "sagemaker_program": json.dumps(ENTRY_POINT), "sagemaker_submit_directory": json.dumps(source_uri),
           "sagemaker_region": json.dumps(args.region)}
    channels = []
    for channel, (uri, config) in job_config.input_data_config(args, manifest).items():
        entry = {"ChannelName": channel, "InputMode": config["TrainingInputMode"],
                 "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                 "S3DataDistributionType": config["S3DistributionType"]}},
                 "RecordWrapperType": config["RecordWrapperType"], "CompressionType": config["CompressionType"]}
        if "ShuffleConfig" in config:
            entry["ShuffleConfig"] = config["ShuffleConfig"]
        channels.append(entry)
    request = {
        "TrainingJobName": name, "RoleArn": args.role,
        "AlgorithmSpecification": {
            "TrainingImage": args.image_uri or image_uri(args.framework_version, args.py_version, args.region,
                                                         args.instance_type),
            "TrainingInputMode": args.input_mode, "MetricDefinitions": METRIC_DEFINITIONS,
            "EnableSageMakerMetricsTimeSeries": True},
        "HyperParameters": hps, "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": args.output_path},
        "ResourceConfig": {"InstanceType": args.instance_type, "InstanceCount": args.instance_count,
                           "VolumeSizeInGB": args.volume_size},
        "StoppingCondition": {"MaxRuntimeInSeconds": args.max_run},
        "Tags": tags(args.tag),
    }
    checkpoint = args.checkpoint_s3_uri or (storage.join(args.output_path, name, "checkpoints") if args.spot else None)
    if checkpoint:
        request["CheckpointConfig"] = {"S3Uri": checkpoint, "LocalPath": CHECKPOINT_LOCAL_PATH}
    if args.spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = args.max_wait or 2 * args.max_run
    return request


def console_link(region, name):
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}"


def stream_logs(region, name, poll=15):
    """Print the job's CloudWatch log events until it reaches a final status; returns that description."""
    sm, logs = storage.client("sagemaker", region), storage.client("logs", region)
    group, tokens = "/aws/sagemaker/TrainingJobs", {}
    while True:
        job = sm.describe_training_job(TrainingJobName=name)
        try:
            streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            streams = []
        for stream in streams:
            stream_name = stream["logStreamName"]
            kwargs = {"nextToken": tokens[stream_name]} if stream_name in tokens else {"startFromHead": True}
            page = logs.get_log_events(logGroupName=group, logStreamName=stream_name, **kwargs)
            tokens[stream_name] = page["nextForwardToken"]
            for event in page["events"]:
                print(f"[{stream_name.split('/', 1)[-1]}] {event['message']}", flush=True)
        if job["TrainingJobStatus"] in FINAL_STATUSES:
            return job
        print(f"... {job['TrainingJobStatus']} ({job.get('SecondaryStatus', '')})", file=sys.stderr, flush=True)
        time.sleep(poll)


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not (storage.is_s3(args.dataset) and storage.is_s3(args.output_path)):
        raise UserError("launch train needs s3:// dataset and output paths (use `launch local` for local folders)")
    manifest = job_config.read_manifest(args.dataset)
    name = job_config.job_name(args)
    source_uri = storage.join(args.output_path, name, "source", "sourcedir.tar.gz")
    bucket, key = storage.split_s3(source_uri)
    storage.client("s3", args.region).put_object(Bucket=bucket, Key=key, Body=source_tarball())
    request = training_job_request(args, manifest, name, source_uri)
    storage.client("sagemaker", args.region).create_training_job(**request)
    print(f"training job {name}\n{console_link(args.region, name)}", flush=True)
    if not args.wait:
        return 0
    job = stream_logs(args.region, name)
    print(f"{name}: {job['TrainingJobStatus']}", flush=True)
    if job["TrainingJobStatus"] != "Completed":
        print(f"error: {job.get('FailureReason', 'no failure reason given')}", file=sys.stderr)
        return 1
    print(f"model: {job['ModelArtifacts']['S3ModelArtifacts']}")
    return 0
