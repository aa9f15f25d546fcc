"""`launch train`: a SageMaker training job through the SageMaker Python SDK v3 `ModelTrainer`.

The TensorFlow training image runs our `trainer/` + `tfrecord/` (launch/source.py) with the shard
channels in Pipe (default), FastFile or File mode plus the File-mode `meta` channel that carries
dataset.json, metric definitions from `trainer.metric_lines`, and managed spot with checkpoints.
boto3, and so the SDK, honours AWS_ENDPOINT_URL.
"""
import os
import sys
import tempfile
import time

from launch import aws, job_config, source
from tfrecord import flags, storage
from tfrecord.errors import UserError, exits_on_user_error
from tfrecord.sagemaker import CHECKPOINT_DIR

FINAL_STATUSES = ("Completed", "Failed", "Stopped")


MAX_RUNTIME = flags.at_least(1, most=28 * 24 * 3600, why=" seconds (SageMaker's limit, 28 days)")  # StoppingCondition

def add_region_argument(p):
    """--region: AWS_DEFAULT_REGION, else us-east-1; the one default of every command that calls SageMaker."""
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline launch train", description=__doc__.splitlines()[0])
    job_config.add_job_arguments(p)
    p.add_argument("--role", required=True, help="SageMaker execution role ARN")
    add_region_argument(p)
    p.add_argument("--instance-type", default="ml.c5.2xlarge")
    p.add_argument("--volume-size", type=flags.positive_int, default=30, help="GB (File mode downloads the shards here)")
    p.add_argument("--framework-version", default="2.21", help="TensorFlow training image version")
    p.add_argument("--py-version", help="of the training image (default: the SDK's for that version)")
    p.add_argument("--image-uri", help="override the TensorFlow training image")
    p.add_argument("--spot", action="store_true", help="managed spot training (checkpoints go to S3)")
    p.add_argument("--checkpoint-s3-uri", type=flags.s3_uri, help="default with --spot: <output-path>/<base job name>/<job>/checkpoints")
    p.add_argument("--max-run", type=MAX_RUNTIME, default=24 * 3600, help="seconds")
    p.add_argument("--max-wait", type=MAX_RUNTIME, help="seconds, spot only (default: twice --max-run)")
    p.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    return p.parse_args(argv)


def image_uri(scope, framework_version, region, instance_type, py_version=None):
    """The TensorFlow `scope` ("training"/"inference") image for a version, region and CPU/GPU instance,
    from the SDK's table."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve("tensorflow", region=region, version=framework_version, py_version=py_version,
                                   instance_type=instance_type, image_scope=scope)
    except ValueError as e:
        raise UserError(f"TensorFlow {scope} image: {str(e).splitlines()[0]}") from None


def tags(pairs):
    from sagemaker.train.configs import Tag

    return [Tag(key=key, value=value) for key, value in job_config.name_values(pairs, "--tag")]


def channels(args, manifest):
    """The shard channels and `meta`, as SDK Channels (mode, distribution, wrapper, compression, shuffle)."""
    from sagemaker.train.configs import Channel, DataSource, S3DataSource, ShuffleConfig

    out = []
    for name, (uri, config) in job_config.input_data_config(args, manifest).items():
        shuffle = config.get("ShuffleConfig")
        out.append(Channel(
            channel_name=name, input_mode=config["TrainingInputMode"],
            data_source=DataSource(s3_data_source=S3DataSource(
                s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type=config["S3DistributionType"])),
            record_wrapper_type=config["RecordWrapperType"], compression_type=config["CompressionType"],
            **({"shuffle_config": ShuffleConfig(seed=shuffle["Seed"])} if shuffle else {})))
    return out


def model_trainer(args, source_dir):
    """A ModelTrainer whose SDK session stages the source under --output-path."""
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import (CheckpointConfig, Compute, MetricDefinition, OutputDataConfig,
                                         SourceCode, StoppingCondition)
    from trainer.metric_lines import METRIC_DEFINITIONS

    bucket, prefix = storage.split_s3(args.output_path)
    session = Session(boto_session=storage.session(args.region), default_bucket=bucket,
                      default_bucket_prefix=prefix.strip("/") or None)
    spot_wait = {"max_wait_time_in_seconds": args.max_wait or 2 * args.max_run} if args.spot else {}
    image = args.image_uri or image_uri("training", args.framework_version, args.region, args.instance_type,
                                        args.py_version)
    checkpoint = (CheckpointConfig(s3_uri=args.checkpoint_s3_uri, local_path=CHECKPOINT_DIR)
                  if args.spot or args.checkpoint_s3_uri else None)
    trainer = ModelTrainer(
        sagemaker_session=session, role=args.role, base_job_name=args.job_name or "captcha",
        training_image=image, training_input_mode=args.input_mode,
        source_code=SourceCode(source_dir=source_dir, entry_script=source.ENTRY_POINT,
                               requirements=source.REQUIREMENTS),
        compute=Compute(instance_type=args.instance_type, instance_count=args.instance_count,
                        volume_size_in_gb=args.volume_size, enable_managed_spot_training=args.spot),
        hyperparameters=job_config.hyperparameters(args.hp),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=args.max_run, **spot_wait),
        checkpoint_config=checkpoint, output_data_config=OutputDataConfig(s3_output_path=args.output_path),
        tags=tags(args.tag) or None)
    return trainer.with_metric_definitions([MetricDefinition(name=m["Name"], regex=m["Regex"])
                                            for m in METRIC_DEFINITIONS])


def console_link(region, name):
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}"


def stream_logs(region, name, poll=15):
    """Print the job's CloudWatch log events until it reaches a final status; returns that description.
    (The SDK's TrainingJob.wait reads logs and status in the default region, not the job's.)"""
    with storage.aws_errors(f"training job {name}"):
        return _stream_logs(aws.client("sagemaker", region), aws.client("logs", region), name, poll)


def _stream_logs(sm, logs, name, poll):
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


def start(args, manifest):
    """Create the job (the SDK uploads the source folder); returns its name (base name + timestamp)."""
    with tempfile.TemporaryDirectory() as folder, storage.aws_errors("CreateTrainingJob"):
        trainer = model_trainer(args, source.write(folder))
        trainer.train(input_data_config=channels(args, manifest), wait=False, logs=False)
    # output_data is `<output path>/<job name>/output/output.tar.gz` (ModelTrainer's public view of its job)
    return trainer.output_data[len(args.output_path.rstrip("/")) + 1:].split("/")[0]


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not (storage.is_s3(args.dataset) and storage.is_s3(args.output_path)):
        raise UserError("launch train needs s3:// dataset and output paths (use `launch local` for local folders)")
    job_config.hyperparameters(args.hp)  # checked against the trainer's flags before any AWS call
    manifest = job_config.read_manifest(args.dataset)
    name = start(args, manifest)
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
