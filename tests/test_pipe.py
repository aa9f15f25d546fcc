"""Pipe mode through real FIFOs fed the way SageMaker feeds them: `<channel>_<epoch>`, one per epoch."""
import gzip
import json
import os
import threading

import pytest

from tfrecord import sagemaker
from tfrecord.channels import channel
from tfrecord.errors import UserError, embedded_user_error
from tfrecord.framing import frame
from tfrecord.manifest import read_manifest
from tfrecord.pipe import pipe_dataset
from tfrecord.recordio import recordio_encode
from tfrecord.readers import files_dataset, shard_files


@pytest.fixture
def container(tmp_path, monkeypatch):
    """A container root; configure(channel=config) writes inputdataconfig.json."""
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path))
    os.makedirs(sagemaker.config_dir())
    os.makedirs(sagemaker.data_dir())

    def configure(**channels):
        config = {name: {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated",
                         "RecordWrapperType": "None", "CompressionType": "None", **c} for name, c in channels.items()}
        with open(os.path.join(sagemaker.config_dir(), "inputdataconfig.json"), "w") as f:
            json.dump(config, f)
    return configure


def feed(channel_name, epochs):
    """Like SageMaker's agent: per epoch create the FIFO, stream the objects into it, close, remove."""
    def run():
        for epoch, objects in enumerate(epochs):
            path = sagemaker.fifo_path(channel_name, epoch)
            os.mkfifo(path)
            try:
                with open(path, "wb") as fifo:
                    for data in objects:
                        fifo.write(data)
            except BrokenPipeError:
                pass  # the reader stopped at an error
            finally:
                os.unlink(path)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def shards(root, split):
    return [open(p, "rb").read() for p in shard_files(root / split)]


def labels(ds):
    return sorted(tuple(r) for _, y in ds for r in y.numpy().tolist())


def test_keras_fit_reads_one_fifo_per_epoch(tiny_dataset, container):
    import keras

    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict(), validation=dict())
    feeders = [feed("train", [shards(tiny_dataset, "train")] * 3), feed("validation", [shards(tiny_dataset, "validation")] * 3)]
    inputs = keras.Input((spec.height, spec.width, 1))
    x = keras.layers.Dense(spec.length * spec.num_classes)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Reshape((spec.length, spec.num_classes))(x)))
    model.compile("adam", "sparse_categorical_crossentropy")
    steps = []

    class CountSteps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            steps.append(0)

        def on_train_batch_end(self, batch, logs=None):
            steps[-1] += 1

    model.fit(pipe_dataset("train", spec, 32), validation_data=pipe_dataset("validation", spec, 32), epochs=3,
              callbacks=[CountSteps()], verbose=0)
    assert steps == [4, 4, 4]  # 120 examples in batches of 32, each epoch exactly one pass
    for feeder in feeders:
        feeder.join(timeout=10)
        assert not feeder.is_alive()
    assert not os.path.exists(sagemaker.fifo_path("train", 3))


def test_same_records_as_the_file_reader(tiny_dataset, container):
    manifest = read_manifest(str(tiny_dataset))
    container(test=dict())
    feed("test", [shards(tiny_dataset, "test")])
    got = labels(pipe_dataset("test", manifest.spec, 8, dtype="uint8"))
    assert len(got) == manifest.split("test").examples
    assert got == labels(files_dataset(tiny_dataset / "test", manifest.spec, 8, dtype="uint8"))


@pytest.mark.parametrize("wrapper, compression, encode", [
    ("RecordIO", "None", recordio_encode),
    ("None", "Gzip", gzip.compress),
    ("RecordIO", "Gzip", lambda d: gzip.compress(recordio_encode(d))),
])
def test_recordio_and_gzip_channels(tiny_dataset, container, wrapper, compression, encode):
    spec = read_manifest(str(tiny_dataset)).spec
    container(test=dict(RecordWrapperType=wrapper, CompressionType=compression))
    feed("test", [[encode(s) for s in shards(tiny_dataset, "test")]])
    assert len(labels(pipe_dataset("test", spec, 8))) == 32


def first_error(ds):
    with pytest.raises(Exception) as info:
        for _ in ds:
            pass
    return embedded_user_error(info.value) or str(info.value)


@pytest.mark.parametrize("where, reason", [(2, "header (length) CRC mismatch"), (30, "payload CRC mismatch")])
def test_corruption_names_channel_epoch_and_offset(tiny_dataset, container, where, reason):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    data = bytearray(b"".join(shards(tiny_dataset, "train")))
    second = len(frame(bytes(int.from_bytes(data[:8], "little"))))  # record 1 starts after record 0
    data[second + where] ^= 0xFF
    feed("train", [[bytes(data)]])
    assert first_error(pipe_dataset("train", spec, 8)) == f"channel train epoch 0: corrupt record at byte {second}: {reason}"


def test_a_truncated_stream_is_an_error_not_a_short_epoch(tiny_dataset, container):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    data = b"".join(shards(tiny_dataset, "train"))
    feed("train", [[data[:-10]]])
    message = first_error(pipe_dataset("train", spec, 8))
    assert message.startswith("channel train epoch 0: corrupt record at byte") and "stream ends inside a record" in message


def test_missing_fifo_times_out_clearly(tiny_dataset, container):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    message = first_error(pipe_dataset("train", spec, 8, timeout=0.3))
    assert message == f"channel train epoch 0: FIFO {sagemaker.fifo_path('train', 0)} did not appear within 0.3 s"


def test_wrong_mode_or_unknown_channel_fails_fast(tiny_dataset, container):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict(TrainingInputMode="File"))
    with pytest.raises(UserError, match="channel 'train' is in File mode, not Pipe"):
        pipe_dataset("train", spec, 8)
    with pytest.raises(UserError, match=r"channel 'validation' is not in inputdataconfig.json \(channels: \['train'\]\)"):
        pipe_dataset("validation", spec, 8)


def test_channel_picks_the_input_mode(tiny_dataset, container, monkeypatch):
    spec = read_manifest(str(tiny_dataset)).spec
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(tiny_dataset / "validation"))
    container(train=dict(), validation=dict(TrainingInputMode="FastFile"))
    feed("train", [shards(tiny_dataset, "train")])
    assert len(labels(channel("train", spec, 16))) == 120
    assert len(labels(channel("validation", spec, 16))) == 32
