"""`launch local`: the SageMaker container contract on this machine, data from the loopback S3 server."""
import io
import os
import tarfile

import pytest

from launch import local, pipe_agent

CONFIG = {"S3DistributionType": "FullyReplicated"}


def test_object_order_shuffle_and_sharding():
    objects = [f"s3://b/train/{i}" for i in range(6)]
    assert pipe_agent.objects_for_host(objects, CONFIG, 0) == objects
    shuffled = {"S3DistributionType": "FullyReplicated", "ShuffleConfig": {"Seed": 3}}
    epoch0, epoch1 = (pipe_agent.objects_for_host(objects, shuffled, e) for e in (0, 1))
    assert sorted(epoch0) == objects and epoch0 != epoch1
    assert epoch0 == pipe_agent.objects_for_host(objects, shuffled, 0)  # the seed decides
    sharded = {"S3DistributionType": "ShardedByS3Key", "ShuffleConfig": {"Seed": 3}}
    hosts = [pipe_agent.objects_for_host(objects, sharded, 1, h, 2) for h in (0, 1)]
    assert sorted(hosts[0] + hosts[1]) == objects and not set(hosts[0]) & set(hosts[1])


def run_local(s3, upload, dataset, name, *flags, source="s3"):
    data = upload(dataset, prefix=f"data-{name}") if source == "s3" else str(dataset)
    return local.main([data, "--output-path", f"s3://{s3.bucket}/jobs", "--job-name", name,
                       "--hp", "epochs=2", "--hp", "batch-size=32", *flags])


def model_files(s3, name):
    body = s3.client.get_object(Bucket=s3.bucket, Key=f"jobs/{name}/output/model.tar.gz")["Body"].read()
    return tarfile.open(fileobj=io.BytesIO(body)).getnames()


@pytest.mark.parametrize("mode, source", [("Pipe", "s3"), ("File", "local")])
def test_local_job(aws_server, s3, upload, tiny_dataset, monkeypatch, capsys, mode, source):
    """Data from the loopback S3 server (or a local folder), model.tar.gz into the output bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    assert run_local(s3, upload, tiny_dataset, f"local-{mode.lower()}", "--input-mode", mode, "--shuffle-seed", "1",
                     source=source) == 0
    out, err = capsys.readouterr()
    assert "epoch=2 " in out and "val_sequence_accuracy=" in out
    if mode == "Pipe":
        assert "pipe train_0" in err and "pipe train_1" in err and "pipe validation_1" in err
    assert {"1/saved_model.pb", "1/assets.extra/captcha_spec.json", "model.keras"} <= set(model_files(s3, f"local-{mode.lower()}"))


def test_local_job_failure_mirrors_sagemaker(aws_server, s3, upload, tiny_dataset, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    rc = run_local(s3, upload, tiny_dataset, "bad", "--input-mode", "File", "--hp", "length=3",
                   "--root", str(tmp_path / "root"))
    reason = "model spec does not match the dataset's (model vs data): length 3 vs 2"
    assert rc == 2  # the trainer's exit status, as SageMaker reports it
    assert capsys.readouterr().err.endswith(f"error: training job bad failed: {reason}\n")
    assert (tmp_path / "root" / "output" / "failure").read_text() == reason + "\n"
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="jobs/bad/")["Contents"]]
    assert "jobs/bad/output/failure" in keys and "jobs/bad/output/model.tar.gz" not in keys


def test_local_refuses_missing_manifest(tmp_path, capsys):
    (tmp_path / "ds" / "train").mkdir(parents=True)
    assert local.main([str(tmp_path / "ds"), "--output-path", str(tmp_path / "out")]) == 2
    assert "no dataset.json" in capsys.readouterr().err


@pytest.mark.parametrize("compression, wrapper", [("None", "None"), ("Gzip", "None"), ("Gzip", "RecordIO")])
def test_pipe_feeder_streams_each_epoch_through_a_fifo(tmp_path, monkeypatch, compression, wrapper):
    """Real FIFOs, read here with plain file reads: each epoch is the objects' bytes concatenated."""
    import gzip
    import threading
    import time

    from tfrecord import sagemaker
    from tfrecord.framing import frame, read_records

    shards = []
    for i in range(3):
        data = b"".join(frame(f"record {i}.{j}".encode()) for j in range(4))
        path = tmp_path / "src" / f"train-{i:05d}.tfrecord"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(gzip.compress(data) if compression == "Gzip" else data)
        shards.append((data, (str(path), path.stat().st_size)))
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "opt_ml"))
    os.makedirs(sagemaker.data_dir())
    config = {"S3DistributionType": "FullyReplicated", "RecordWrapperType": wrapper, "CompressionType": compression}
    stop, errors = threading.Event(), []
    feeder = threading.Thread(target=pipe_agent.feed_pipe, args=("train", [o for _, o in shards], config,
                                                            pipe_agent.Progress(), stop, errors))
    feeder.start()
    try:
        for epoch in range(2):
            fifo = sagemaker.fifo_path("train", epoch)
            deadline = time.monotonic() + 30
            while not os.path.exists(fifo):
                assert time.monotonic() < deadline and not errors, f"no {fifo}: {errors}"
                time.sleep(0.01)
            with open(fifo, "rb") as f:
                stream = f.read()
            if wrapper == "RecordIO":  # each object one RecordIO record
                from tfrecord.recordio import RecordIOUnwrapper
                stream = RecordIOUnwrapper(fifo).feed(stream)
            assert stream == b"".join(data for data, _ in shards)
            assert list(read_records(io.BytesIO(stream), fifo)) == [  # well-framed records, in object order
                f"record {i}.{j}".encode() for i in range(3) for j in range(4)]
    finally:
        stop.set()
        feeder.join(timeout=10)
    assert not errors
