"""files_dataset / decode: counts and labels against the manifest, options, sharding, bad sources."""
import numpy as np
import pytest

from tfrecord.errors import UserError
from tfrecord.manifest import read_manifest
from tfrecord.readers import decode_batch, files_dataset, shard_files


def labels(ds):
    return [tuple(row) for _, y in ds for row in y.numpy().tolist()]


def test_files_dataset_matches_the_manifest(tiny_dataset):
    manifest = read_manifest(str(tiny_dataset))
    spec = manifest.spec
    ds = files_dataset(tiny_dataset / "train", spec, 16)
    images, y = next(iter(ds))
    assert images.shape == (16, spec.height, spec.width, 1) and images.dtype.name == "float32"
    assert 0 <= float(np.min(images)) and float(np.max(images)) <= 1
    assert y.shape == (16, spec.length) and y.dtype.name == "int32"
    assert len(labels(ds)) == manifest.split("train").examples


def test_options_uint8_rgb_deterministic_and_worker_sharding(tiny_dataset):
    spec = read_manifest(str(tiny_dataset)).spec
    images, _ = next(iter(files_dataset(tiny_dataset / "test", spec, 4, dtype="uint8", channels=3)))
    assert images.shape[-1] == 3 and images.dtype.name == "uint8"
    first = labels(files_dataset(tiny_dataset / "train", spec, 8, deterministic=True))
    assert first == labels(files_dataset(tiny_dataset / "train", spec, 8, deterministic=True))
    shuffled = labels(files_dataset(tiny_dataset / "train", spec, 8, shuffle_buffer=64, seed=1))
    assert sorted(shuffled) == sorted(first) and shuffled != first
    parts = [labels(files_dataset(tiny_dataset / "train", spec, 8, num_workers=3, worker_index=i)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(first) and all(parts)


def test_decode_batch(tiny_dataset):
    import tensorflow as tf

    spec = read_manifest(str(tiny_dataset)).spec
    records = list(tf.data.TFRecordDataset(shard_files(tiny_dataset / "validation")).take(5))
    images, y = decode_batch(tf.stack(records), spec, dtype="uint8")
    assert images.shape == (5, spec.height, spec.width, 1) and y.shape == (5, spec.length)


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
