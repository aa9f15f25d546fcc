"""Fault injection, hostile dataset.json and shards: a manifest from outside is validated where it is read
(one line naming the field, exit 2, for `inspect` and `train` alike); a manifest whose alphabet or size is
not the data's is one line naming the shard as the readers meet its first records (files and Pipe); a
gzip, zip or RecordIO shard is named as what it is; a FIFO in a shard's place is refused, never read; and
a trainer that has printed an error exits."""
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from launch import inspect_dataset
from launch.pipe_agent import Progress, feed_pipe
from tfrecord import framing, sagemaker, schema
from tfrecord.errors import UserError, embedded_user_error
from tfrecord.files import files_dataset, read_shard, shard_files
from tfrecord.manifest import read_manifest
from tfrecord.pipe import pipe_dataset
from tfrecord.recordio import recordio_encode

pytestmark = pytest.mark.timeout(180)  # a reader that blocks is a failure, not a hung suite

TRAIN_0, TRAIN_1 = "train/train-00000-of-00003.tfrecord", "train/train-00001-of-00003.tfrecord"


def shard(i):
    return lambda d: d["splits"]["train"]["shards"][i]


# (what is changed in dataset.json, the one line after "<root>/dataset.json: ")
CORRUPTIONS = [
    (lambda d: d["spec"].update(length=True), "spec.length: must be an integer, got true"),
    (lambda d: d["spec"].update(width=40.0), "spec.width: must be an integer, got 40.0"),
    (lambda d: d["spec"].update(alphabet=123), "spec.alphabet: must be a string, got 123"),
    (lambda d: d["spec"].update(fonts="a.ttf"), 'spec.fonts: must be an array, got "a.ttf"'),
    (lambda d: d["spec"].update(colour="red"), "spec.colour: unknown field"),
    (lambda d: d["spec"].update(length=0), "spec: length must be >= 1, got 0"),
    (lambda d: d["spec"].update(width=100000), "spec: image 100000x24 is larger than 1024x1024 pixels"),
    (lambda d: d["spec"].update(alphabet="00123"), "spec: alphabet '00123' repeats a character"),
    (lambda d: shard(1)(d).update(records="40"), 'splits.train.shards[1].records: must be an integer, got "40"'),
    (lambda d: shard(1)(d).update(records=40.0), "splits.train.shards[1].records: must be an integer, got 40.0"),
    (lambda d: shard(0)(d).update(bytes=-1),
     "splits.train.shards[0].bytes: must be greater than or equal to 0, got -1"),
    (lambda d: shard(0)(d).update(bytes=10), "splits.train.shards[0]: 40 records cannot fit in 10 bytes (each record "
                                             "takes at least 16)"),
    (lambda d: shard(0)(d).update(sha256="abc"),
     'splits.train.shards[0].sha256: must match pattern \'^[0-9a-f]{64}$\', got "abc"'),
    (lambda d: shard(0)(d).pop("sha256"), "splits.train.shards[0].sha256: missing"),
    (lambda d: shard(0)(d).update(path="../../etc/passwd"),
     "splits.train.shards[0].path: \"../../etc/passwd\" is not a shard in the 'train' split's folder (expected "
     "train/<name>.tfrecord)"),
    (lambda d: shard(0)(d).update(path="validation/validation-00000-of-00003.tfrecord"),
     "splits.train.shards[0].path: \"validation/validation-00000-of-00003.tfrecord\" is not a shard in the 'train' "
     "split's folder (expected train/<name>.tfrecord)"),
    (lambda d: d["splits"]["train"]["shards"].append(dict(shard(0)(d))),
     f"splits.train.shards[3].path: {TRAIN_0} is listed twice"),
    (lambda d: d["splits"]["train"].update(examples=121),
     "splits.train.examples: 121, but the record counts of its 3 shards do not add up to it (120)"),
    (lambda d: d["splits"]["train"].update(examples=120.0), "splits.train.examples: must be an integer, got 120.0"),
    (lambda d: d["splits"].update(extra=d["splits"]["test"]),
     "splits.extra: split name must be 'train', 'validation' or 'test', got \"extra\""),
    (lambda d: d["options"]["num_shards"].update(train=4), "options.num_shards.train: 4, but the 'train' split has 3"),
    (lambda d: d["options"].update(plan_version=3),
     "options.plan_version: unknown plan version 3 (this reader knows 1 to 2: a newer captcha-pipeline wrote it)"),
    (lambda d: d.update(mode="random"), "mode: must be 'uniform' or 'permutations', got \"random\""),
    (lambda d: d.update(seed="0"), 'seed: must be an integer, got "0"'),
    (lambda d: d.pop("splits"), "splits: missing"),
    (lambda d: d.update(format_version=2), "unsupported format_version 2"),
]


def copy_with(tiny_dataset, tmp_path, change):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    manifest = json.loads((root / "dataset.json").read_text())
    change(manifest)
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def run_train(root, tmp_path, train_args, capsys, *extra):
    from trainer import train

    status = train.main(train_args(root, tmp_path / "out", "--epochs", "1", *extra))
    return status, capsys.readouterr().err


@pytest.mark.parametrize("change, problem", CORRUPTIONS, ids=[problem.split(":")[0] for _, problem in CORRUPTIONS])
def test_each_way_a_manifest_is_wrong_is_one_line_naming_the_field(tiny_dataset, tmp_path, train_args, capsys,
                                                                  change, problem):
    root = copy_with(tiny_dataset, tmp_path, change)
    assert inspect_dataset.main([str(root)]) == 2
    assert capsys.readouterr().err == f"error: {root}/dataset.json: {problem}\n"
    assert run_train(root, tmp_path, train_args, capsys) == (2, f"error: {root}/dataset.json: {problem}\n")
    assert not (tmp_path / "out").exists()  # refused before any work


def first_record(path):
    with open(path, "rb") as f:
        return schema.decode_example(next(framing.read_records(f, str(path))))


def test_a_permuted_alphabet_is_one_line_naming_the_shard(tiny_dataset, tmp_path, train_args, capsys):
    root = copy_with(tiny_dataset, tmp_path, lambda d: d["spec"].update(alphabet="9876543210"))
    line = r"error: {}: label indices \[(\d), (\d)\] do not spell '(\d)(\d)' in the alphabet '9876543210'\n"
    assert inspect_dataset.main([str(root)]) == 2  # inspect reads the splits and shards in order
    record = first_record(root / TRAIN_0)
    assert capsys.readouterr().err == (f"error: {TRAIN_0} record 0: label indices "
                                       f"{record[schema.LABEL]} do not spell {record[schema.TEXT][0].decode()!r} "
                                       "in the alphabet '9876543210'\n")
    status, err = run_train(root, tmp_path, train_args, capsys)
    found = re.fullmatch(line.format(rf"{root}/train/train-0000[0-2]-of-00003\.tfrecord record 0"), err)
    assert status == 2 and found, err
    named = re.search(r"train-0000\d-of-00003\.tfrecord", err)[0]
    record = first_record(root / "train" / named)  # the shard named holds exactly that record first
    assert [int(i) for i in found.groups()[:2]] == record[schema.LABEL]
    assert "".join(found.groups()[2:]) == record[schema.TEXT][0].decode()


def test_a_shortened_alphabet_is_one_line_naming_the_shard(tiny_dataset, tmp_path, train_args, capsys):
    root = copy_with(tiny_dataset, tmp_path, lambda d: d["spec"].update(alphabet="012345678"))
    status, err = run_train(root, tmp_path, train_args, capsys)
    assert status == 2
    assert re.fullmatch(rf"error: {root}/train/train-0000[0-2]-of-00003\.tfrecord record \d+: label '(9\d|\d9)' is "
                        r"not 2 characters of '012345678'\n", err), err
    assert inspect_dataset.main([str(root)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: {TRAIN_0} record \d+: label '(9\d|\d9)' is not 2 characters of '012345678'\n", err), err


def test_a_wrong_stored_size_is_one_line_naming_the_shard(tiny_dataset, tmp_path, train_args, capsys):
    root = copy_with(tiny_dataset, tmp_path, lambda d: d["spec"].update(store_width=20))
    status, err = run_train(root, tmp_path, train_args, capsys)
    assert status == 2
    assert re.fullmatch(rf"error: {root}/train/train-0000[0-2]-of-00003\.tfrecord record 0: declared png 40x24, "
                        r"spec says png 20x24\n", err), err
    assert inspect_dataset.main([str(root)]) == 2
    assert capsys.readouterr().err == f"error: {TRAIN_0} record 0: declared png 40x24, spec says png 20x24\n"


@pytest.fixture
def pipe_channel(tmp_path, monkeypatch):
    """pipe_channel(name, files) -> the Pipe agent streams the files into `<name>_0` (a real FIFO)."""
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "opt_ml"))
    os.makedirs(sagemaker.config_dir())
    os.makedirs(sagemaker.data_dir())
    stop, errors, threads, channels = threading.Event(), [], [], {}

    def start(name, files):
        config = channels[name] = {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated",
                                   "RecordWrapperType": "None", "CompressionType": "None"}
        with open(os.path.join(sagemaker.config_dir(), "inputdataconfig.json"), "w") as f:
            json.dump(channels, f)
        objects = [(str(f), os.path.getsize(f)) for f in files]
        thread = threading.Thread(target=feed_pipe, daemon=True,
                                  args=(name, objects, config, Progress(open(os.devnull, "w")), stop, errors))
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


def test_the_pipe_reader_meets_a_wrong_alphabet_and_size_in_one_line(tiny_dataset, pipe_channel, first_error):
    spec = read_manifest(str(tiny_dataset)).spec
    record = first_record(tiny_dataset / "test/test-00000-of-00003.tfrecord")
    text, label = record[schema.TEXT][0].decode(), record[schema.LABEL]
    pipe_channel("test", shard_files(tiny_dataset / "test"))
    pipe_channel("validation", shard_files(tiny_dataset / "test"))
    permuted = type(spec)(**{**spec.to_dict(), "alphabet": "9876543210"})
    assert first_error(pipe_dataset("test", permuted, 8)) == (
        f"channel test epoch 0 record 0: label indices {label} do not spell {text!r} in the alphabet '9876543210'")
    halved = type(spec)(**{**spec.to_dict(), "store_width": 20})
    assert first_error(pipe_dataset("validation", halved, 8)) == (
        "channel validation epoch 0 record 0: declared png 40x24, spec says png 20x24")


@pytest.mark.parametrize("kind, encode, line", [
    ("gzip", gzip.compress, "gzip-compressed data at byte 0, not TFRecord: decompress it first (gunzip), or read it "
                            "through a Pipe channel with CompressionType Gzip"),
    ("RecordIO", recordio_encode, "RecordIO-wrapped data at byte 0, not TFRecord: read it through a Pipe channel "
                                  "with RecordWrapperType RecordIO"),
    ("zip", lambda data: b"PK\x03\x04" + data,
     "a zip archive at byte 0, not TFRecord: extract its TFRecord shards first"),
    ("png", lambda data: b"\x89PNG\r\n\x1a\n" + data,
     "a PNG image at byte 0, not TFRecord: shards hold tf.train.Example records: write them with "
     "`captcha-pipeline generate`"),
])
def test_a_shard_of_another_kind_is_named_as_what_it_is(tiny_dataset, tmp_path, first_error, pipe_channel,
                                                        kind, encode, line):
    spec = read_manifest(str(tiny_dataset)).spec
    split = tmp_path / "test"
    shutil.copytree(tiny_dataset / "test", split)
    path = split / "test-00000-of-00003.tfrecord"
    path.write_bytes(encode(path.read_bytes()))
    assert first_error(files_dataset(path, spec, 8)) == f"{path}: {line}"
    pipe_channel("test", [path])
    assert first_error(pipe_dataset("test", spec, 8)) == f"channel test epoch 0: {line}"


@pytest.mark.parametrize("command", ["inspect", "train"])
@pytest.mark.parametrize("path, what", [(TRAIN_1, "shard"), ("dataset.json", "dataset manifest")])
def test_a_fifo_in_place_of_a_shard_or_manifest_is_refused_not_read(tiny_dataset, tmp_path, train_args, capsys,
                                                                     command, path, what):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    (root / path).unlink()
    os.mkfifo(root / path)  # no writer ever opens it: any read would block for good
    line = f"error: {root}/{path}: is a FIFO, not a regular file (a {what} must be one)\n"
    if command == "inspect":
        assert inspect_dataset.main([str(root)]) == 2
        assert capsys.readouterr().err == line
    else:
        assert run_train(root, tmp_path, train_args, capsys) == (2, line)
        assert not (tmp_path / "out").exists()


def test_the_files_reader_refuses_a_device_and_a_fifo_opened_later(tiny_dataset, tmp_path, first_error):
    spec = read_manifest(str(tiny_dataset)).spec
    with pytest.raises(UserError) as e:  # refused as the dataset is made, before anything is read
        files_dataset("/dev/zero", spec, 8)
    assert str(e.value) == "/dev/zero: is a device, not a regular file (a shard must be one)"

    fifo = tmp_path / "late.tfrecord"
    os.mkfifo(fifo)  # a shard that became a FIFO after the listing: the open itself refuses it, unblocked
    with pytest.raises(UserError) as e:
        next(read_shard(str(fifo)))
    assert str(e.value) == f"{fifo}: is a FIFO, not a regular file (a shard must be one)"


@pytest.mark.parametrize("command", [["trainer.train"], ["launch.cli", "train"]], ids=["python -m", "console"])
def test_a_trainer_that_printed_a_traceback_exits(tiny_dataset, tmp_path, train_args, command):
    """An error TensorFlow raises inside the input pipeline (an undecodable PNG past the records checked in
    Python) leaves `main` as a traceback; the process then exits instead of waiting on a tf.data thread."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    manifest = read_manifest(str(root))
    for info in manifest.split("train").shards:  # record 39 of each train shard: a PNG whose data is garbage
        records = list(framing.read_records(open(root / info.path, "rb"), info.path))
        features = schema.decode_example(records[39])
        png = features[schema.IMAGE][0]
        records[39] = schema.encode_example(png[:33] + b"\0" * (len(png) - 33), features[schema.TEXT][0].decode(),
                                            manifest.spec)
        data = b"".join(framing.frame(r) for r in records)
        (root / info.path).write_bytes(data)
        info.bytes, info.sha256 = len(data), hashlib.sha256(data).hexdigest()
    (root / "dataset.json").write_text(manifest.to_json())
    args = train_args(root, tmp_path / "out", "--epochs", "2", "--shuffle-buffer", "0")
    done = subprocess.run([sys.executable, "-m", *command, *args], capture_output=True, text=True,
                          timeout=150, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" in done.stderr and embedded_user_error(done.stderr) is None
