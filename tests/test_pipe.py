"""Pipe mode through real FIFOs fed by the one Pipe agent (launch/pipe_agent.py): `<channel>_<epoch>`, one per epoch."""
import gc
import gzip
import io
import json
import os
import re
import shutil
import threading
import time

import pytest

from launch.pipe_agent import Progress, feed_pipe
from tfrecord import sagemaker, schema
from tfrecord.batching import every_nth
from tfrecord.channels import channel
from tfrecord.errors import ManifestError, UserError
from tfrecord.files import files_dataset, shard_files
from tfrecord.framing import frame, read_records
from tfrecord.manifest import read_manifest
from tfrecord.pipe import pipe_dataset

pytestmark = pytest.mark.timeout(120)  # a reader that blocks is a failure, not a hung suite


@pytest.fixture
def container(tmp_path, monkeypatch):
    """A container root; configure(channel=config) writes inputdataconfig.json (Pipe, FullyReplicated by default)."""
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "opt_ml"))
    os.makedirs(sagemaker.config_dir())
    os.makedirs(sagemaker.data_dir())

    def configure(**channels):
        config = {name: {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated",
                         "RecordWrapperType": "None", "CompressionType": "None", **c} for name, c in channels.items()}
        with open(os.path.join(sagemaker.config_dir(), "inputdataconfig.json"), "w") as f:
            json.dump(config, f)
    return configure


@pytest.fixture
def agent(container):
    """agent(channel, files): the Pipe agent streams the files into `<channel>_0`, `<channel>_1`, ... in a thread."""
    stop, errors, threads, log = threading.Event(), [], [], io.StringIO()

    def start(name, files):
        objects = [(str(f), os.path.getsize(f)) for f in files]
        config = sagemaker.input_data_config()[name]
        thread = threading.Thread(target=feed_pipe, args=(name, objects, config, Progress(log), stop, errors),
                                  daemon=True)
        thread.start()
        threads.append(thread)
        return log

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors


def write(path, data):
    path.write_bytes(data)
    return path


def file_labels(*paths):
    """The label indices of every record of these shard files, in order, as tuples."""
    found = []
    for path in paths:
        with open(path, "rb") as f:
            found += [tuple(schema.decode_example(r)[schema.LABEL]) for r in read_records(f, str(path))]
    return found



# Keras says so after each epoch of a dataset of unknown length; here each epoch is one whole FIFO, as meant.
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_keras_fit_reads_one_fifo_per_epoch(tiny_dataset, container, agent):
    import keras

    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict(), validation=dict())
    log = agent("train", shard_files(tiny_dataset / "train"))
    agent("validation", shard_files(tiny_dataset / "validation"))
    inputs = keras.Input(spec.input_shape)
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
              callbacks=[CountSteps()], shuffle=False, verbose=0)  # the reader shuffles, not fit
    assert steps == [4, 4, 4]  # 120 examples in batches of 32, each epoch exactly one pass
    streamed = [line.split()[1] for line in log.getvalue().splitlines()]
    assert sorted(streamed) == ["train_0", "train_1", "train_2", "validation_0", "validation_1", "validation_2"]


def test_same_records_as_the_file_reader(tiny_dataset, container, agent, labels):
    manifest = read_manifest(str(tiny_dataset))
    container(test=dict())
    agent("test", shard_files(tiny_dataset / "test"))
    got = labels(pipe_dataset("test", manifest.spec, 8, records=32, deterministic=True))
    assert got == labels(files_dataset(tiny_dataset / "test", manifest.spec, 8, deterministic=True))


@pytest.mark.parametrize("wrapper, compression, encode", [
    ("RecordIO", "None", lambda d: d),
    ("None", "Gzip", gzip.compress),  # the agent inflates, as SageMaker does
    ("RecordIO", "Gzip", gzip.compress),
    ("None", "Gzip", lambda d: gzip.compress(gzip.compress(d))),  # a stream still compressed: the reader inflates
])
def test_recordio_and_gzip_channels(tiny_dataset, tmp_path, container, agent, wrapper, compression, encode, labels):
    spec = read_manifest(str(tiny_dataset)).spec
    container(test=dict(RecordWrapperType=wrapper, CompressionType=compression))
    agent("test", [write(tmp_path / f"{i}.gz", encode(open(s, "rb").read()))
                   for i, s in enumerate(shard_files(tiny_dataset / "test"))])
    assert labels(pipe_dataset("test", spec, 8, records=32)) == file_labels(*shard_files(tiny_dataset / "test"))


@pytest.mark.parametrize("where, reason", [(2, "header (length) CRC mismatch"), (30, "payload CRC mismatch")])
def test_corruption_names_channel_epoch_and_offset(tiny_dataset, tmp_path, container, agent, where, reason,
                                                   first_error):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    data = bytearray(b"".join(open(s, "rb").read() for s in shard_files(tiny_dataset / "train")))
    second = len(frame(bytes(int.from_bytes(data[:8], "little"))))  # record 1 starts after record 0
    data[second + where] ^= 0xFF
    agent("train", [write(tmp_path / "bad", bytes(data))])
    assert first_error(pipe_dataset("train", spec, 8)) == f"channel train epoch 0: corrupt record at byte {second}: {reason}"


def test_corrupt_gzip_names_channel_epoch_and_offset(tiny_dataset, tmp_path, container, agent, first_error):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict(CompressionType="Gzip"))
    inner = bytearray(gzip.compress(b"".join(open(s, "rb").read() for s in shard_files(tiny_dataset / "train"))))
    inner[len(inner) // 2] ^= 0xFF
    agent("train", [write(tmp_path / "bad.gz", gzip.compress(bytes(inner)))])  # the agent inflates the outer layer
    message = first_error(pipe_dataset("train", spec, 8))
    assert message.startswith("channel train epoch 0: corrupt record at byte 0: bad gzip data in the ")
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("cut, message", [
    (-10, "corrupt record at byte {} : stream ends inside a record"),
    (None, "the FIFO held 80 records, the dataset's 'train' split has 120"),
])
def test_a_stream_cut_short_is_an_error_not_a_short_epoch(tiny_dataset, tmp_path, container, agent, cut, message,
                                                          first_error):
    manifest = read_manifest(str(tiny_dataset))
    container(train=dict())
    shards = shard_files(tiny_dataset / "train")
    data = b"".join(open(s, "rb").read() for s in shards[:2])  # a shard missing: cut at a record boundary
    agent("train", [write(tmp_path / "cut", data[:cut] if cut else data)])
    error = first_error(channel("train", manifest.spec, 8, manifest=manifest))
    assert error.startswith("channel train epoch 0: ")
    head, _, tail = message.partition("{} ")
    assert head in error and tail in error


def test_sharded_pipe_channels_are_not_counted(tiny_dataset, container, agent, labels):
    manifest = read_manifest(str(tiny_dataset))
    container(train=dict(S3DistributionType="ShardedByS3Key"))
    agent("train", shard_files(tiny_dataset / "train")[:2])  # this host's share of the objects
    assert labels(channel("train", manifest.spec, 8, manifest=manifest)) == file_labels(*shard_files(tiny_dataset / "train")[:2])


def test_repeat_continues_fifo_after_fifo(tiny_dataset, container, agent, labels):
    manifest = read_manifest(str(tiny_dataset))
    container(train=dict())
    log = agent("train", shard_files(tiny_dataset / "train"))
    one_pass = labels(files_dataset(tiny_dataset / "train", manifest.spec, 8, deterministic=True))
    stream = iter(channel("train", manifest.spec, 50, manifest=manifest, repeat=True, deterministic=True))
    drawn = [tuple(r) for _ in range(6) for r in next(stream)[1].numpy().tolist()]
    assert drawn == one_pass + one_pass + one_pass[:60]  # a host short of records continues into the next FIFO
    assert [line.split()[1] for line in log.getvalue().splitlines()][:2] == ["train_0", "train_1"]


@pytest.mark.timeout(60)
def test_closing_the_stream_releases_the_agent(tiny_dataset, tmp_path, container, agent):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    data = b"".join(open(s, "rb").read() for s in shard_files(tiny_dataset / "train")) * 200  # 22 MB: fills the pipe
    log = agent("train", [write(tmp_path / "big", data)])
    stream = iter(channel("train", spec, 50, repeat=True))
    next(stream)
    assert not os.path.exists(sagemaker.fifo_path("train", 1))  # the agent is still writing FIFO 0
    del stream
    gc.collect()
    deadline = time.monotonic() + 20
    while not os.path.exists(sagemaker.fifo_path("train", 1)):  # the reader closed FIFO 0: the agent moved on
        assert time.monotonic() < deadline, "the agent is still blocked on FIFO 0"
        time.sleep(0.05)
    sent, total = re.search(r"^pipe train_0 .* ([\d.]+) / ([\d.]+) MB", log.getvalue(), re.MULTILINE).groups()
    assert float(sent) < float(total) == round(len(data) / 1e6, 2)  # FIFO 0 ended when the reader let go, not at its end


def test_a_fifo_that_never_appears_or_never_gets_a_writer_times_out(tiny_dataset, container, first_error):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    path = sagemaker.fifo_path("train", 0)
    assert first_error(pipe_dataset("train", spec, 8, timeout=0.3)) == (
        f"channel train epoch 0: FIFO {path} did not appear within 0.3 s")
    os.mkfifo(path)
    assert first_error(pipe_dataset("train", spec, 8, timeout=0.3)) == (
        f"channel train epoch 0: no data from FIFO {path} for 0.3 s at byte 0 (no writer opened it, or the writer stalled)")


def test_a_stalled_writer_times_out(tiny_dataset, container, first_error):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict())
    path = sagemaker.fifo_path("train", 0)
    os.mkfifo(path)
    data = open(shard_files(tiny_dataset / "train")[0], "rb").read()
    release = threading.Event()

    def stall():
        with open(path, "wb") as fifo:
            fifo.write(data[:1000])
            fifo.flush()
            release.wait(30)
    threading.Thread(target=stall, daemon=True).start()
    try:
        assert first_error(pipe_dataset("train", spec, 8, timeout=0.5)).startswith(
            f"channel train epoch 0: no data from FIFO {path} for 0.5 s at byte 1000")
    finally:
        release.set()


def test_workers_on_a_fully_replicated_channel_keep_every_nth_record(tiny_dataset, container, agent, labels):
    spec = read_manifest(str(tiny_dataset)).spec
    container(test=dict())
    agent("test", shard_files(tiny_dataset / "test"))
    every = labels(files_dataset(tiny_dataset / "test", spec, 8, deterministic=True))
    assert labels(pipe_dataset("test", spec, 8, num_workers=3, worker_index=1, deterministic=True)) == every[1::3]
    assert list(every_nth([[0, 1, 2, 3], [4], [5, 6, 7]], 3, 2)) == [[2], [], [5]]


def test_wrong_mode_or_unknown_channel_fails_fast(tiny_dataset, container):
    spec = read_manifest(str(tiny_dataset)).spec
    container(train=dict(TrainingInputMode="File"))
    with pytest.raises(UserError, match="channel 'train' is in File mode, not Pipe"):
        pipe_dataset("train", spec, 8)
    with pytest.raises(UserError, match=r"channel 'validation' is not in inputdataconfig.json \(channels: \['train'\]\)"):
        pipe_dataset("validation", spec, 8)


def test_channel_picks_the_input_mode(tiny_dataset, tmp_path, container, agent, monkeypatch, labels):
    manifest = read_manifest(str(tiny_dataset))
    share = tmp_path / "validation"  # this host's ShardedByS3Key share of a FastFile channel: 2 of 3 shards
    share.mkdir()
    for path in shard_files(tiny_dataset / "validation")[1:]:
        shutil.copy(path, share)
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(share))
    container(train=dict(), validation=dict(TrainingInputMode="FastFile", S3DistributionType="ShardedByS3Key"))
    agent("train", shard_files(tiny_dataset / "train"))
    assert labels(channel("train", manifest.spec, 16, manifest=manifest)) == file_labels(*shard_files(tiny_dataset / "train"))
    assert sorted(labels(channel("validation", manifest.spec, 16, manifest=manifest))) == sorted(
        file_labels(*shard_files(share)))
    shutil.copy(shard_files(tiny_dataset / "test")[0], share)
    with pytest.raises(ManifestError, match=r"test-00000-of-00003.tfrecord: not one of the 3 shards of the 'validation'"):
        channel("validation", manifest.spec, 16, manifest=manifest)
