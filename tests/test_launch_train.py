"""`launch train` against moto's SageMaker and S3 APIs: the CreateTrainingJob request, read back."""
import io
import os
import tarfile

import boto3
import pytest

from launch import sagemaker_job
from trainer.metrics import METRIC_DEFINITIONS

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def aws_env(aws_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    return aws_server


def upload(dataset, client, bucket, prefix="data"):
    for dirpath, _, files in os.walk(dataset):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), dataset)
            client.upload_file(os.path.join(dirpath, f), bucket, f"{prefix}/{rel}")
    return f"s3://{bucket}/{prefix}"


@pytest.fixture
def sent(monkeypatch):
    """CreateTrainingJob requests as sent over the wire (moto does not echo every field back)."""
    from launch import storage

    requests, make_client = [], storage.client

    def client(service="s3", region=None):
        c = make_client(service, region)
        c.meta.events.register("provide-client-params.sagemaker.CreateTrainingJob",
                               lambda params, **_: requests.append(params))
        return c

    monkeypatch.setattr(storage, "client", client)
    return requests


def describe(s3, name):
    return boto3.client("sagemaker", endpoint_url=s3.url, region_name="us-east-1").describe_training_job(
        TrainingJobName=name)


def test_pipe_job_request(aws_env, s3, tiny_dataset, sent, capsys):
    data = upload(tiny_dataset, s3.client, s3.bucket)
    rc = sagemaker_job.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE, "--job-name", "j1",
                             "--instance-count", "2", "--shuffle-seed", "7", "--instance-type", "ml.g5.xlarge",
                             "--hp", "epochs=3", "--hp", "batch-size=32", "--spot", "--max-run", "3600",
                             "--tag", "team=vision"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "j1" in out and "console.aws.amazon.com" in out
    assert "3 shards for 2 instances" in err
    job = describe(s3, "j1")  # what the API stored ...
    assert job["TrainingJobStatus"] and job["RoleArn"] == ROLE
    assert [sent[0]["TrainingJobName"]] == ["j1"]
    algo = job["AlgorithmSpecification"]
    assert algo["TrainingImage"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.16-gpu-py310"
    assert algo["TrainingInputMode"] == "Pipe"
    # moto replaces MetricDefinitions with its own: check them as sent
    assert sent[0]["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}
    assert set(channels) == {"train", "validation", "meta"}
    train = channels["train"]
    assert train["InputMode"] == "Pipe"
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == f"{data}/train/"
    assert train["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert train["ShuffleConfig"] == {"Seed": 7}
    assert channels["meta"]["InputMode"] == "File"
    assert channels["meta"]["DataSource"]["S3DataSource"]["S3Uri"] == f"{data}/dataset.json"
    hps = job["HyperParameters"]
    assert hps["epochs"] == "3" and hps["batch-size"] == "32" and hps["sagemaker_program"] == '"sagemaker_entry.py"'
    assert job["EnableManagedSpotTraining"] is True and sent[0]["Tags"] == [{"Key": "team", "Value": "vision"}]
    assert job["CheckpointConfig"]["S3Uri"] == f"s3://{s3.bucket}/jobs/j1/checkpoints"
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["ResourceConfig"]["InstanceCount"] == 2
    # the source tarball holds the trainer, the data contract and the entry point
    body = s3.client.get_object(Bucket=s3.bucket, Key="jobs/j1/source/sourcedir.tar.gz")["Body"].read()
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    assert {"sagemaker_entry.py", "trainer/train.py", "tfrecord/sagemaker.py"} <= set(names)


def test_file_mode_single_instance_wait(aws_env, s3, tiny_dataset, capsys):
    data = upload(tiny_dataset, s3.client, s3.bucket)
    assert sagemaker_job.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE,
                               "--job-name", "j2", "--input-mode", "FastFile", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "j2: Completed" in out and f"s3://{s3.bucket}/jobs/j2/output/model.tar.gz" in out
    job = describe(s3, "j2")
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}
    assert channels["train"]["InputMode"] == "FastFile"
    assert channels["validation"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"
    assert "cpu" in job["AlgorithmSpecification"]["TrainingImage"]


def test_refuses_prefix_without_manifest(aws_env, s3, capsys):
    s3.client.put_object(Bucket=s3.bucket, Key="nodata/train/x.tfrecord", Body=b"")
    rc = sagemaker_job.main([f"s3://{s3.bucket}/nodata", "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no dataset.json" in err and len(err.strip().splitlines()) == 1


def test_cli_entry_points():
    import subprocess
    import sys

    from launch import jobs

    assert jobs.main([]) == 2 and jobs.main(["--help"]) == 0
    out = subprocess.run([sys.executable, "-m", "launch.train", "--help"], capture_output=True, text=True, check=True)
    assert "--shuffle-seed" in out.stdout and "--spot" in out.stdout
