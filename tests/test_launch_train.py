"""`launch train` (SageMaker SDK v3 ModelTrainer) against moto's SageMaker and S3 APIs: the CreateTrainingJob
request as sent and as stored."""

import boto3
import pytest

from launch import sagemaker_job
from trainer.metric_lines import METRIC_DEFINITIONS

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def aws_env(aws_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    return aws_server


@pytest.fixture
def sent(monkeypatch):
    """CreateTrainingJob requests as the SDK sends them (moto does not echo every field back)."""
    from tfrecord import storage

    requests, make_session = [], storage.session

    def session(region=None):
        s = make_session(region)
        s.events.register("provide-client-params.sagemaker.CreateTrainingJob",
                          lambda params, **_: requests.append(params))
        return s

    monkeypatch.setattr(storage, "session", session)
    return requests


def describe(s3, name):
    return boto3.client("sagemaker", endpoint_url=s3.url, region_name="us-east-1").describe_training_job(
        TrainingJobName=name)


def test_pipe_job_request(aws_env, s3, upload, tiny_dataset, sent, capsys):
    data = upload(tiny_dataset)
    rc = sagemaker_job.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE, "--job-name", "j1",
                             "--instance-count", "2", "--shuffle-seed", "7", "--instance-type", "ml.g5.xlarge",
                             "--hp", "epochs=3", "--hp", "batch-size=32", "--spot", "--max-run", "3600",
                             "--tag", "team=vision"])
    assert rc == 0
    out, err = capsys.readouterr()
    [request] = sent
    name = request["TrainingJobName"]
    assert name.startswith("j1-") and name in out and "console.aws.amazon.com" in out
    assert "3 shards for 2 instances" in err
    job = describe(s3, name)  # what the API stored ...
    assert job["TrainingJobName"] == name and job["RoleArn"] == ROLE
    assert job["TrainingJobStatus"] == "Completed"  # moto completes a job as soon as it is created
    algo = request["AlgorithmSpecification"]  # ... and what the SDK sent
    assert algo["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.21-gpu-py312"
    assert algo["TrainingInputMode"] == "Pipe"
    assert algo["MetricDefinitions"] == METRIC_DEFINITIONS
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert set(channels) == {"train", "validation", "meta", "code", "sm_drivers"}
    train = channels["train"]
    assert train["InputMode"] == "Pipe" and train["RecordWrapperType"] == "None"
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == f"{data}/train/"
    assert train["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert train["ShuffleConfig"] == {"Seed": 7}
    assert channels["validation"]["InputMode"] == "Pipe" and "ShuffleConfig" not in channels["validation"]
    assert channels["meta"]["InputMode"] == "File"
    assert channels["meta"]["DataSource"]["S3DataSource"]["S3Uri"] == f"{data}/dataset.json"
    assert channels["code"]["InputMode"] == "File"  # the SDK's own channels stay readable files
    hps = request["HyperParameters"]
    assert hps == {"epochs": "3", "batch-size": "32"}
    assert request["EnableManagedSpotTraining"] is True and request["Tags"] == [{"Key": "team", "Value": "vision"}]
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{s3.bucket}/jobs/j1/{name}/checkpoints",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{s3.bucket}/jobs"
    # the source channel holds the trainer, the data contract, the entry point and its requirements
    code = channels["code"]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, prefix = code[len("s3://"):].split("/", 1)
    keys = {o["Key"][len(prefix):].lstrip("/")
            for o in s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert {"sagemaker_entry.py", "trainer/train.py", "tfrecord/sagemaker.py", "requirements.txt"} <= keys


def test_file_mode_single_instance_wait(aws_env, s3, upload, tiny_dataset, capsys):
    data = upload(tiny_dataset)
    assert sagemaker_job.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE,
                               "--job-name", "j2", "--input-mode", "FastFile", "--wait"]) == 0
    out = capsys.readouterr().out
    name = out.split()[2]
    assert name.startswith("j2-") and f"{name}: Completed" in out
    assert f"s3://{s3.bucket}/jobs/{name}/output/model.tar.gz" in out
    job = describe(s3, name)
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}
    assert channels["train"]["InputMode"] == "FastFile"
    assert channels["validation"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"
    assert "cpu" in job["AlgorithmSpecification"]["TrainingImage"]


def test_region_reaches_image_job_and_logs(aws_env, s3, upload, tiny_dataset, sent, capsys):
    data = upload(tiny_dataset)
    assert sagemaker_job.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE, "--job-name", "j3",
                               "--region", "eu-west-1", "--framework-version", "2.19", "--wait"]) == 0
    name = sent[0]["TrainingJobName"]
    assert sent[0]["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.19-cpu-py312")
    job = boto3.client("sagemaker", endpoint_url=s3.url, region_name="eu-west-1").describe_training_job(
        TrainingJobName=name)
    assert job["TrainingJobStatus"] == "Completed" and "region=eu-west-1" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--framework-version", "1.0"], "Unsupported tensorflow version: 1.0"),
    (["--tag", "novalue"], "expected NAME=VALUE"),
    (["--instance-count", "5"], "fewer than the 5 instances"),
])
def test_bad_job_settings_are_one_line_errors(aws_env, s3, upload, tiny_dataset, sent, capsys, flags, message):
    data = upload(tiny_dataset)
    assert sagemaker_job.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not sent


def test_refuses_prefix_without_manifest(aws_env, s3, capsys):
    s3.client.put_object(Bucket=s3.bucket, Key="nodata/train/x.tfrecord", Body=b"")
    rc = sagemaker_job.main([f"s3://{s3.bucket}/nodata", "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no dataset.json" in err and len(err.strip().splitlines()) == 1


def test_cli_entry_points(capsys):
    import subprocess
    import sys

    from launch import cli

    assert cli.main([]) == 0 and "launch deploy" in capsys.readouterr().out
    assert cli.main(["launch", "nope"]) == 2 and "unknown command 'launch nope'" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "launch.cli", "launch", "train", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--shuffle-seed" in out.stdout and "--spot" in out.stdout
