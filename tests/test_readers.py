"""The files reader and per-batch decoding: uint8 batches, repeat, the manifest's shards and counts, corrupt shards."""
import dataclasses
import shutil

import numpy as np
import pytest

from tfrecord import schema
from tfrecord.channels import channel
from tfrecord.errors import ManifestError, UserError
from tfrecord.files import files_dataset, shard_files
from tfrecord.framing import frame, read_records
from tfrecord.manifest import read_manifest



def records(path):
    with open(path, "rb") as f:
        return list(read_records(f, str(path)))


def shard_labels(root, *shards):
    """The label indices of every record of these manifest shards, read from the files, as tuples."""
    return [tuple(schema.decode_example(r)[schema.LABEL]) for s in shards for r in records(root / s.path)]


@pytest.fixture
def copy(tiny_dataset, tmp_path):
    """A writable copy of the tiny dataset and its manifest."""
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    return root, read_manifest(str(root))


def test_uint8_batches_match_the_manifest(tiny_dataset, labels):
    manifest = read_manifest(str(tiny_dataset))
    spec = manifest.spec
    ds = files_dataset(tiny_dataset / "train", spec, 16, manifest=manifest, split="train")
    images, y = next(iter(ds))
    assert images.shape == (16, *spec.input_shape) and images.dtype.name == "uint8" and int(np.max(images)) > 1
    assert y.shape == (16, spec.length) and y.dtype.name == "int32"
    assert sorted(labels(ds)) == sorted(labels(channel("train", spec, 7, path=tiny_dataset / "train")))
    assert sorted(labels(ds)) == sorted(shard_labels(tiny_dataset, *manifest.split("train").shards))


def test_order_shuffle_and_worker_sharding(tiny_dataset, labels):
    spec = read_manifest(str(tiny_dataset)).spec
    train = tiny_dataset / "train"
    first = labels(files_dataset(train, spec, 8, deterministic=True))
    assert first == labels(files_dataset(train, spec, 8, deterministic=True))
    shuffled = files_dataset(train, spec, 8, shuffle_buffer=64, seed=1, deterministic=True)
    epoch1, epoch2 = labels(shuffled), labels(shuffled)
    assert sorted(epoch1) == sorted(first) and epoch1 != first and epoch2 != epoch1  # reshuffled per iteration
    assert epoch1 == labels(files_dataset(train, spec, 8, shuffle_buffer=64, seed=1, deterministic=True))
    parts = [labels(files_dataset(train, spec, 8, num_workers=3, worker_index=i)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(first) and all(parts)


def test_repeat_is_one_endless_stream_pass_after_pass(tiny_dataset, labels):
    spec = read_manifest(str(tiny_dataset)).spec
    one_pass = labels(files_dataset(tiny_dataset / "train", spec, 8, deterministic=True))

    def draw(stream, batches):
        return [tuple(row) for _ in range(batches) for row in next(stream)[1].numpy().tolist()]

    stream = iter(channel("train", spec, 50, path=tiny_dataset / "train", repeat=True, deterministic=True))
    assert draw(stream, 6) == one_pass + one_pass + one_pass[:60]  # 300 = 2.5 passes of 120, batches span passes
    shuffled = draw(iter(channel("train", spec, 60, path=tiny_dataset / "train", shuffle_buffer=16, seed=3,
                                 repeat=True)), 6)
    assert set(shuffled[:240]) == set(one_pass) and shuffled[:120] != shuffled[120:240] != shuffled[240:]


def test_raw_records_decode_per_batch_to_the_png_pixels(tiny_dataset, tmp_path):
    """The same images as PNG and as raw uint8 records: identical batches."""
    import tensorflow as tf

    manifest = read_manifest(str(tiny_dataset))
    png_spec = manifest.spec
    raw_spec = dataclasses.replace(png_spec, image_format="raw")
    for shard in shard_files(tiny_dataset / "test"):
        raw = []
        for record in records(shard):
            feature = schema.decode_example(record)
            pixels = tf.io.decode_png(feature[schema.IMAGE][0]).numpy().tobytes()
            raw.append(frame(schema.encode_example(pixels, feature[schema.TEXT][0].decode(), raw_spec)))
        (tmp_path / shard.rsplit("/", 1)[1]).write_bytes(b"".join(raw))
    png = list(files_dataset(tiny_dataset / "test", png_spec, 10))
    raw = list(files_dataset(tmp_path, raw_spec, 10))
    assert len(raw) == 4 and all(x.dtype.name == "uint8" for x, _ in raw)
    for (x1, y1), (x2, y2) in zip(png, raw):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_only_the_manifest_shards_are_read(copy, labels):
    root, manifest = copy
    spec = manifest.spec
    (root / "train" / "old-00000-of-00004.tfrecord").write_bytes((root / manifest.split("train").shards[0].path).read_bytes())
    with pytest.raises(ManifestError, match=r"train/old-00000-of-00004.tfrecord: not one of the 3 shards of the 'train' split"):
        channel("train", spec, 8, path=root / "train", manifest=manifest)
    shards = manifest.split("train").shards
    assert sorted(labels(channel("train", spec, 8, path=root / "train"))) == sorted(  # no manifest: the folder
        shard_labels(root, *shards, shards[0]))
    (root / "train" / "old-00000-of-00004.tfrecord").unlink()
    (root / manifest.split("train").shards[2].path).unlink()
    with pytest.raises(ManifestError, match=r"train-00002-of-00003.tfrecord: missing \(dataset.json lists it"):
        channel("train", spec, 8, path=root / "train", manifest=manifest)
    # a host of a ShardedByS3Key File channel holds some of the shards
    some = files_dataset(root / "train", spec, 8, manifest=manifest, split="train", subset=True)
    assert sorted(labels(some)) == sorted(shard_labels(root, *shards[:2]))


@pytest.mark.parametrize("change, message", [
    (lambda r: r[:-1], "{path}: {short} records, dataset.json lists {n} (a short shard)"),
    (lambda r: r + r[:1], "{path}: more than the {n} records dataset.json lists for it"),
])
def test_a_short_or_long_shard_is_an_error_naming_it(copy, change, message, first_error):
    root, manifest = copy
    shard = manifest.split("train").shards[1]
    path = root / shard.path
    path.write_bytes(b"".join(frame(r) for r in change(records(path))))
    error = first_error(channel("train", manifest.spec, 8, path=root / "train", manifest=manifest, repeat=True))
    assert error == message.format(path=path, n=shard.records, short=shard.records - 1)


@pytest.mark.parametrize("where, reason", [(2, "header (length) CRC mismatch"), (30, "payload CRC mismatch")])
def test_a_corrupt_shard_names_the_shard_and_offset(copy, where, reason, first_error):
    root, manifest = copy
    path = root / manifest.split("validation").shards[2].path
    data = bytearray(path.read_bytes())
    second = len(frame(records(path)[0]))  # record 1 starts after record 0
    data[second + where] ^= 0xFF
    path.write_bytes(bytes(data))
    ds = channel("validation", manifest.spec, 8, path=root / "validation", manifest=manifest, deterministic=True)
    assert first_error(ds) == f"{path}: corrupt record at byte {second}: {reason}"


def test_train_and_evaluate_on_a_corrupt_shard_are_one_line_and_exit_2(copy, train_args, tiny_model, tmp_path, capsys):
    from trainer import evaluate, train

    root, manifest = copy
    for split in ("train", "test"):
        path = root / manifest.split(split).shards[0].path
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF  # the last record's payload CRC
        path.write_bytes(bytes(data))
    capsys.readouterr()
    assert train.main(train_args(root, tmp_path / "out", "--epochs", "1")) == 2
    assert evaluate.main(["--model-dir", str(tiny_model), "--data", str(root / "test"),
                          "--report", str(tmp_path / "report.json"), "--gallery", str(tmp_path / "errors.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    for split, line in zip(("train", "test"), lines):
        path = root / manifest.split(split).shards[0].path
        assert line.startswith(f"error: {path}: corrupt record at byte ") and line.endswith(": payload CRC mismatch")


def test_bad_sources_are_refused(tiny_dataset, tmp_path):
    spec = read_manifest(str(tiny_dataset)).spec
    with pytest.raises(UserError, match="is a dataset root"):
        files_dataset(tiny_dataset, spec, 4)
    with pytest.raises(UserError, match="no .tfrecord shards"):
        files_dataset(tmp_path, spec, 4)
    with pytest.raises(UserError, match="no such shard"):
        files_dataset(tmp_path / "nope", spec, 4)
    with pytest.raises(UserError, match="fewer shards than workers"):
        files_dataset(tiny_dataset / "train", spec, 4, num_workers=4, worker_index=3)
