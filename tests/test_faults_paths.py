"""Nothing outside what a command owns is read, written or deleted: symbolic links inside an output are
refused and never followed, a local path built from an outside name (an S3 key, a manifest entry, a label)
stays inside its folder, and anything that looks like a URI but is not `s3://bucket[/prefix]` is refused
in one line by every command that takes a location."""
import hashlib
import json
import os

import pytest

from beam_jobs import generate
from launch import inspect_dataset
from launch.container import download_channel
from test_storage import SMALL, gen, location, refused  # noqa: F401  (location is a fixture)
from tfrecord import localfs, sagemaker, storage
from tfrecord.errors import UserError

FULLY_REPLICATED = {"S3DistributionType": "FullyReplicated"}


def digest(folder):
    """{relative path: sha256} of every file under `folder` (links listed, not followed)."""
    return {os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            if not os.path.islink(os.path.join(d, f)) else "link"
            for d, _, files in os.walk(folder) for f in files}


@pytest.fixture
def victim(tmp_path):
    """A folder outside every output, holding a file named like a shard and a foreign notes.txt."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "train-00000-of-00002.tfrecord").write_bytes(b"not ours")
    (folder / "notes.txt").write_text("mine")
    return folder


def one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_a_symlinked_split_folder_is_refused_and_nothing_outside_is_written(tmp_path, victim, capsys, extra):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train").symlink_to(victim, target_is_directory=True)
    before = digest(victim)
    assert generate.main(["--output", str(out), *SMALL, *extra]) == 2
    assert f"{out / 'train'} is a symbolic link" in one_line(capsys)
    assert digest(victim) == before and os.listdir(out) == ["train"]


def test_a_link_inside_a_dataset_is_never_followed_by_overwrite(tmp_path, victim, capsys):
    out = tmp_path / "out"
    assert generate.main(["--output", str(out), *SMALL]) == 0
    shard = out / "validation" / "validation-00000-of-00002.tfrecord"
    shard.unlink()
    shard.symlink_to(victim / "notes.txt")  # a shard the manifest names, now a link to a file outside
    before = digest(victim)
    capsys.readouterr()
    assert generate.main(["--output", str(out), *SMALL, "--seed", "5", "--overwrite"]) == 2
    assert f"{shard} is a symbolic link" in one_line(capsys)
    assert digest(victim) == before and shard.is_symlink()


def test_a_link_made_after_the_check_is_not_written_through(tmp_path, victim):
    """The shard writer proves its own path: a split folder turned into a link mid-run is refused there."""
    from beam_jobs import output

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UserError, match="train: a symbolic link inside"):
        output.shard_uri(str(tmp_path / "out"), "train/train-00000-of-00002.tfrecord")
    assert (victim / "train-00000-of-00002.tfrecord").read_bytes() == b"not ours"


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/escape", "", ".", "a//b", "a/./b", "nul\0"])
def test_an_outside_name_that_leaves_its_folder_is_refused(tmp_path, name):
    with pytest.raises(UserError, match="is not a path inside"):
        localfs.inside(str(tmp_path / "folder"), name, "manifest entry")
    assert os.listdir(tmp_path) == []


def test_an_outside_name_through_a_link_is_refused(tmp_path, victim):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "sub").symlink_to(victim, target_is_directory=True)
    assert localfs.inside(str(tmp_path / "folder"), "a/b.png", "label") == str(tmp_path / "folder" / "a" / "b.png")
    with pytest.raises(UserError, match=r"folder/sub: a symbolic link inside .*; links are not followed"):
        localfs.inside(str(tmp_path / "folder"), "sub/train-00000-of-00002.tfrecord", "label")


def file_mode_objects(s3, keys):
    for key in keys:
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"" if key.endswith("/") else key.encode())
    storage.configure({"endpoint_url": s3.url})
    prefix = f"s3://{s3.bucket}/ds/train/"
    return prefix, storage.list(prefix)


@pytest.mark.parametrize("key", ["ds/train/../../escape", "ds/train/sub/../../../escape"])
def test_file_mode_refuses_an_object_key_that_leaves_the_channel(s3, tmp_path, monkeypatch, key):
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "root"))
    prefix, objects = file_mode_objects(s3, ["ds/train/a.tfrecord", key])
    assert (f"s3://{s3.bucket}/{key}", len(key)) in objects  # the server keeps the key as it is
    with pytest.raises(UserError, match=r"channel train: object s3://.*: '.*\.\./escape' is not a path inside"):
        download_channel(str(tmp_path / "root"), "train", objects, prefix, FULLY_REPLICATED)
    assert not list((tmp_path).rglob("escape")) and not (tmp_path / "root" / "input" / "data" / "train" / "a.tfrecord").exists()


def test_file_mode_skips_a_folder_marker(s3, tmp_path, monkeypatch):
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "root"))
    prefix, objects = file_mode_objects(s3, ["ds/train/", "ds/train/a.tfrecord", "ds/train/sub/", "ds/train/sub/b.tfrecord"])
    download_channel(str(tmp_path / "root"), "train", objects, prefix, FULLY_REPLICATED)
    channel = tmp_path / "root" / "input" / "data" / "train"
    assert digest(channel) == {p: hashlib.sha256(f"ds/train/{p}".encode()).hexdigest() for p in ("a.tfrecord", "sub/b.tfrecord")}


def test_file_mode_refuses_a_local_key_through_a_link(tmp_path, victim, monkeypatch):
    """A local dataset's object downloaded into a channel folder whose subfolder is a link."""
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "root"))
    data = tmp_path / "ds" / "train"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "train-00000-of-00002.tfrecord").write_bytes(b"new")
    channel = tmp_path / "root" / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "sub").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UserError, match="a symbolic link inside"):
        download_channel(str(tmp_path / "root"), "train", storage.list(str(data)), str(data), FULLY_REPLICATED)
    assert (victim / "train-00000-of-00002.tfrecord").read_bytes() == b"not ours"


BAD_URIS = ["s3://", "s3:///prefix", "S3://bucket/x", "s3://B/x", "s3://my_bucket/x", "s3://-b/x", "gs://bucket/x",
            "file:///tmp/x"]


@pytest.mark.parametrize("uri", BAD_URIS)
def test_a_malformed_uri_is_refused_by_generate(tmp_path, monkeypatch, capsys, uri):
    monkeypatch.chdir(tmp_path)
    assert generate.main(["--output", uri, *SMALL]) == 2
    assert f"{uri}: not a valid location" in one_line(capsys)
    assert os.listdir(tmp_path) == []  # no folder named `s3:` or `S3:`


@pytest.mark.parametrize("uri", BAD_URIS)
def test_a_malformed_uri_is_refused_by_inspect(tmp_path, tiny_dataset, monkeypatch, capsys, uri):
    monkeypatch.chdir(tmp_path)
    assert inspect_dataset.main([uri]) == 2
    assert f"{uri}: not a valid location" in one_line(capsys)
    assert inspect_dataset.main([str(tiny_dataset), "--contact-sheet", f"{uri}/sheet.png"]) == 2
    assert "not a valid location" in one_line(capsys)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["--report", "--gallery", "--samples"])
@pytest.mark.parametrize("uri", ["S3://bucket/x", "s3://bucket/x"])
def test_a_uri_where_evaluate_writes_a_local_file_is_refused(tmp_path, tiny_dataset, tiny_model, monkeypatch, capsys,
                                                            flag, uri):
    from trainer import evaluate

    monkeypatch.chdir(tmp_path)
    assert evaluate.main(["--model-dir", str(tiny_model), "--data", str(tiny_dataset / "test"), flag, uri]) == 2
    assert uri in one_line(capsys)
    assert os.listdir(tmp_path) == []


def test_a_valid_s3_uri_and_local_paths_are_accepted():
    assert storage.is_s3("s3://my-bucket.v2/a/b") and storage.is_s3("s3://abc")
    assert not any(storage.is_s3(p) for p in ("out", "/tmp/out", "./s3:", "data/s3://"))


def test_overwrite_deletes_nothing_a_manifest_names_outside_the_output(tmp_path, victim):
    """dataset.json is outside input too: a shard entry pointing out of the dataset is never deleted."""
    out = tmp_path / "out"
    assert generate.main(["--output", str(out), *SMALL]) == 0
    manifest = json.loads((out / "dataset.json").read_text())
    manifest["splits"]["train"]["shards"].append(
        {"path": "../victim/notes.txt", "records": 0, "bytes": 4, "sha256": hashlib.sha256(b"mine").hexdigest()})
    (out / "dataset.json").write_text(json.dumps(manifest))
    assert generate.main(["--output", str(out), *SMALL, "--seed", "5", "--overwrite"]) in (0, 2)  # replaced, or refused
    assert digest(victim) == {"train-00000-of-00002.tfrecord": hashlib.sha256(b"not ours").hexdigest(),
                              "notes.txt": hashlib.sha256(b"mine").hexdigest()}


@pytest.mark.parametrize("flag", ["--model-dir", "--checkpoint-dir", "--output-data-dir"])
@pytest.mark.parametrize("uri", ["S3://bucket/x", "s3://bucket/x", "s3://"])
def test_a_uri_where_train_writes_a_local_folder_is_refused(tmp_path, tiny_dataset, train_args, monkeypatch, capsys,
                                                           flag, uri):
    from trainer import train

    monkeypatch.chdir(tmp_path)
    assert train.main(train_args(tiny_dataset, tmp_path / "run", "--epochs", "1") + [flag, uri]) == 2
    assert uri in one_line(capsys)
    assert os.listdir(tmp_path) == []
