"""One storage API for local folders and s3:// (the loopback S3 server), and `generate`'s output safety on
both: an existing dataset or an interrupted run is never overwritten silently, and --overwrite deletes
only the old dataset's own files."""
import hashlib
import os
import types

import pytest

from beam_jobs import generate
from launch import aws
from tfrecord import storage
from tfrecord.manifest import read_manifest

SMALL = ["--chars", "ab", "--length", "2", "--width", "40", "--height", "24", "--num-shards", "2",
         "--train-examples", "8", "--validation-examples", "4", "--test-examples", "4"]


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    """An empty output location: `.uri`, `.flags` for generate, `.put(relpath, data)`, `.tree()` {relpath: sha256}."""
    if request.param == "local":
        root = tmp_path / "out"

        def put(relpath, data):
            (root / relpath).parent.mkdir(parents=True, exist_ok=True)
            (root / relpath).write_bytes(data)

        def tree():
            return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
                    for d, _, files in os.walk(root) for f in files}

        return types.SimpleNamespace(uri=str(root), flags=[], settings={}, put=put, tree=tree)
    s3 = request.getfixturevalue("s3")

    def put(relpath, data):
        s3.client.put_object(Bucket=s3.bucket, Key=f"out/{relpath}", Body=data)

    def tree():
        objects = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="out/").get("Contents", [])
        return {o["Key"][len("out/"):]: hashlib.sha256(s3.client.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()).hexdigest()
                for o in objects}

    return types.SimpleNamespace(uri=f"s3://{s3.bucket}/out", flags=["--s3_endpoint_url", s3.url],
                                 settings={"endpoint_url": s3.url}, put=put, tree=tree)


def gen(location, *flags):
    return generate.main(["--output", location.uri, *SMALL, *location.flags, *flags])


def refused(location, capsys, *flags):
    """Run generate expecting a refusal: exit status 2 and one line on stderr, which is returned."""
    capsys.readouterr()
    assert gen(location, *flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def shards(tree):
    return sorted(path for path in tree if path.endswith(".tfrecord"))


def test_the_api_on_both(location):
    storage.configure(location.settings)
    uri = lambda relpath: storage.join(location.uri, relpath)  # noqa: E731
    assert storage.list(storage.join(location.uri, "")) == [] and not storage.exists(uri("a/b.bin"))
    storage.write_atomic(uri("a/b.bin"), b"hello")
    storage.write_atomic(uri("a/c.bin"), b"!")
    assert storage.read(uri("a/b.bin")) == b"hello" and storage.exists(uri("a/b.bin"))
    with storage.open(uri("a/c.bin")) as f:
        assert f.read(1) == b"!"
    assert storage.list(storage.join(location.uri, "")) == [(uri("a/b.bin"), 5), (uri("a/c.bin"), 1)]
    assert location.tree().keys() == {"a/b.bin", "a/c.bin"}  # no temp file left behind
    assert storage.relative(location.uri, uri("a/b.bin")) == "a/b.bin"
    storage.delete([uri("a/b.bin"), uri("a/missing")])
    with pytest.raises(storage.NotFound, match="b.bin: not found"):
        storage.read(uri("a/b.bin"))


def test_an_existing_dataset_is_refused_and_kept(location, capsys):
    assert gen(location) == 0
    before = location.tree()
    assert "already holds a different dataset; pass --overwrite" in refused(location, capsys, "--seed", "7")
    assert location.tree() == before
    assert gen(location) == 0  # the same options: rewrites identical bytes
    assert location.tree() == before


def test_overwrite_replaces_the_old_dataset_completely(location):
    assert gen(location) == 0
    old = shards(location.tree())
    assert gen(location, "--seed", "7", "--num-shards", "1", "--overwrite") == 0
    after = location.tree()
    assert shards(after) == ["test/test-00000-of-00001.tfrecord", "train/train-00000-of-00001.tfrecord",
                             "validation/validation-00000-of-00001.tfrecord"]
    assert not set(old) & set(after) and set(after) == {"dataset.json", *shards(after)}
    assert read_manifest(location.uri).seed == 7


def test_shards_without_a_manifest_are_refused_then_overwritten(location, capsys):
    """An interrupted run (shards, no dataset.json) is refused like a dataset; --overwrite replaces all of it."""
    assert gen(location) == 0
    storage.configure(location.settings)
    storage.delete([storage.join(location.uri, "dataset.json")])
    before = location.tree()
    assert "holds shards but no dataset.json (an interrupted run?); pass --overwrite" in refused(
        location, capsys, "--num-shards", "1")
    assert location.tree() == before
    assert gen(location, "--num-shards", "1", "--overwrite") == 0
    assert len(shards(location.tree())) == 3  # not the old -of-00002 beside the new -of-00001


def test_files_that_are_not_part_of_the_dataset_are_refused_never_deleted(location, capsys):
    assert gen(location) == 0
    # each added file sorts before the ones already there, so the refusal must name the newest
    for foreign in ["validation/validation-00009-of-00010.tfrecord", "train/my-own-data.tfrecord",
                    "test/sub/keep.tfrecord", "notes.txt"]:
        location.put(foreign, b"mine")
        before = location.tree()
        assert f"{foreign}, which is not part of the dataset in dataset.json" in refused(
            location, capsys, "--seed", "7", "--overwrite")
        assert location.tree() == before


def test_foreign_files_beside_an_interrupted_run_are_refused(location, capsys):
    location.put("train/train-00000-of-00002.tfrecord", b"half")
    location.put("train/my-own-data.tfrecord", b"mine")
    before = location.tree()
    assert "train/my-own-data.tfrecord, which is not part of a dataset" in refused(location, capsys, "--overwrite")
    assert location.tree() == before


def test_s3_flags_reach_beam_workers(s3):
    """Worker processes know nothing of the driver's settings unless the DoFns carry them."""
    assert "AWS_ENDPOINT_URL" not in os.environ
    out = f"s3://{s3.bucket}/multi"
    assert generate.main(["--output", out, *SMALL, "--s3_endpoint_url", s3.url,
                          "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]) == 0
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="multi/")["Contents"]}
    assert keys == {"multi/dataset.json", *(f"multi/{split}/{split}-0000{i}-of-00002.tfrecord"
                                           for split in ("train", "validation", "test") for i in range(2))}


def test_every_client_is_bounded():
    """Ours and those the SageMaker SDK makes from our session: bounded connect/read time and attempts."""
    for client in (storage.client(), aws.client("sagemaker", "eu-west-1"), storage.session().client("logs")):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (storage.CONNECT_TIMEOUT, storage.READ_TIMEOUT)
        assert config.retries == {"total_max_attempts": storage.MAX_ATTEMPTS, "mode": "standard"}
