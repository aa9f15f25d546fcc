"""The Pipe feeder (launch/pipe_agent.py) under a reader that stops early and objects that inflate hugely.

A reader closing its FIFO is the normal end of that epoch's stream on every feeder path; the feeder goes
on to the next epoch. Its memory is bounded by its pieces, never by what an object inflates to.
"""
import gzip
import os
import subprocess
import sys
import threading
import time
import zlib

import pytest

from launch import pipe_agent
from tfrecord import sagemaker
from tfrecord.framing import frame
from tfrecord.recordio import RecordIOUnwrapper

pytestmark = pytest.mark.timeout(120)

OBJECTS, RECORD = 400, 4000  # 1.6 MB an epoch of one-record objects: more than the 1 MiB pipe holds


def _wait_for(path, feeder):
    while not os.path.exists(path):
        assert feeder.is_alive(), "the feeder ended before creating the FIFO"
        time.sleep(0.005)


def _objects(tmp_path, s3, upload, source, compression):
    folder = tmp_path / "src"
    folder.mkdir()
    data = []
    for i in range(OBJECTS):
        body = frame(os.urandom(RECORD))
        data.append(body)
        (folder / f"train-{i:05d}.tfrecord").write_bytes(gzip.compress(body) if compression == "Gzip" else body)
    prefix = upload(folder, prefix="feeder") + "/" if source == "s3" else str(folder)
    from tfrecord import storage
    return storage.list(prefix), data


@pytest.mark.parametrize("source, wrapper, compression", [
    ("local", "None", "None"),  # file -> pipe by splice on Linux
    ("local", "RecordIO", "None"),  # buffered local
    ("local", "None", "Gzip"),
    ("local", "RecordIO", "Gzip"),
    ("s3", "None", "None"),  # S3 streaming
    ("s3", "RecordIO", "Gzip"),
])
def test_a_reader_closing_the_fifo_early_ends_that_epoch_only(tmp_path, monkeypatch, request, source, wrapper,
                                                              compression):
    if source == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("aws_server").url)
        s3, upload = request.getfixturevalue("s3"), request.getfixturevalue("upload")
    else:
        s3 = upload = None
    objects, data = _objects(tmp_path, s3, upload, source, compression)
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "opt_ml"))
    os.makedirs(sagemaker.data_dir())
    config = {"S3DistributionType": "FullyReplicated", "RecordWrapperType": wrapper, "CompressionType": compression}
    stop, errors, log = threading.Event(), [], open(tmp_path / "progress.log", "w")
    feeder = threading.Thread(target=pipe_agent.feed_pipe, args=("train", objects, config,
                                                                pipe_agent.Progress(log), stop, errors))
    feeder.start()
    try:
        _wait_for(sagemaker.fifo_path("train", 0), feeder)
        with open(sagemaker.fifo_path("train", 0), "rb") as f:
            assert len(f.read(1000)) == 1000  # then the reader stops: training ended mid-epoch
        _wait_for(sagemaker.fifo_path("train", 1), feeder)
        with open(sagemaker.fifo_path("train", 1), "rb") as f:
            stream = f.read()
    finally:
        stop.set()
        feeder.join(timeout=30)
        log.close()
    assert not feeder.is_alive() and errors == []
    if wrapper == "RecordIO":
        stream = RecordIOUnwrapper("train_1").feed(stream)
    assert stream == b"".join(data)  # the next epoch is whole
    assert "pipe train_0 " in (tmp_path / "progress.log").read_text()
    assert ", closed by the reader" in (tmp_path / "progress.log").read_text()


def test_a_feeder_error_before_the_reader_is_done_is_reported(tmp_path, monkeypatch):
    """Plain shards read as Gzip: the zlib error names the stream and object, and stops the feeder."""
    path = tmp_path / "train-00000.tfrecord"
    path.write_bytes(frame(b"x" * 100))
    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "opt_ml"))
    os.makedirs(sagemaker.data_dir())
    config = {"S3DistributionType": "FullyReplicated", "RecordWrapperType": "None", "CompressionType": "Gzip"}
    stop, errors = threading.Event(), []
    feeder = threading.Thread(target=pipe_agent.feed_pipe, args=("train", [(str(path), 116)], config,
                                                                pipe_agent.Progress(open(os.devnull, "w")), stop,
                                                                errors))
    feeder.start()
    _wait_for(sagemaker.fifo_path("train", 0), feeder)
    with open(sagemaker.fifo_path("train", 0), "rb") as f:
        f.read()
    feeder.join(timeout=30)
    assert errors == [f"pipe train_0: {path}: zlib.error: Error -3 while decompressing data: incorrect header check"]
    assert stop.is_set()


INFLATED = 768 << 20  # what one 1 MB gzip object inflates to
GROWTH_LIMIT = 200 << 20  # the feeder's and reader's memory may grow by this much at most (they need a few MiB)


def _gzip_bomb(path):
    """A gzip object of ~1 MB that inflates to INFLATED bytes of well-framed records of zeros; written in pieces."""
    record = frame(bytes(1 << 20))
    deflate = zlib.compressobj(9, wbits=31)
    with open(path, "wb") as f:
        for _ in range(INFLATED // len(record)):
            f.write(deflate.compress(record))
        f.write(deflate.flush())
    return INFLATED // len(record) * len(record)


MEASURE = """
import os, resource, sys, threading
from launch import pipe_agent
from tfrecord import sagemaker
{setup}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{work}
print(inflated, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""

FEED = """
from tfrecord.recordio import RecordIOUnwrapper
os.makedirs(sagemaker.data_dir())
config = {{"S3DistributionType": "FullyReplicated", "RecordWrapperType": "{wrapper}", "CompressionType": "Gzip"}}
stop, errors = threading.Event(), []
def read():
    global inflated
    while not os.path.exists(sagemaker.fifo_path("train", 0)):
        pass
    inflated, unwrap = 0, RecordIOUnwrapper("train_0") if config["RecordWrapperType"] == "RecordIO" else None
    with open(sagemaker.fifo_path("train", 0), "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            inflated += len(unwrap.feed(chunk) if unwrap else chunk)
    stop.set()
"""


def _measure(tmp_path, setup, work):
    env = {**os.environ, sagemaker.ROOT_ENV: str(tmp_path / "opt_ml")}
    done = subprocess.run([sys.executable, "-c", MEASURE.format(setup=setup, work=work)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    inflated, growth = map(int, done.stdout.split())
    return inflated, growth


@pytest.mark.parametrize("wrapper", ["None", "RecordIO"])
def test_the_feeder_inflates_a_gzip_object_in_bounded_memory(tmp_path, wrapper):
    """A 1 MB object that inflates to 768 MiB: the feeder streams it (RecordIO: counted, then streamed) with
    its memory growing by far less than the object inflates to."""
    path = tmp_path / "train-00000.tfrecord"
    size = _gzip_bomb(path)
    reader = "threading.Thread(target=read, daemon=True).start()"
    feed = f"pipe_agent.feed_pipe('train', [({str(path)!r}, {path.stat().st_size})], config, " \
           "pipe_agent.Progress(open(os.devnull, 'w')), stop, errors)\nassert not errors, errors"
    inflated, growth = _measure(tmp_path, FEED.format(wrapper=wrapper), f"{reader}\n{feed}")
    assert inflated == size  # RecordIO: in two parts, as the payload is longer than 2^29 - 1 bytes
    assert growth < GROWTH_LIMIT, f"the feeder grew by {growth >> 20} MiB"


def test_the_pipe_reader_inflates_a_gzip_stream_in_bounded_memory(tmp_path):
    """A still-compressed Gzip stream through the Pipe reader: records come a block at a time."""
    path = tmp_path / "train-00000.tfrecord"
    size = _gzip_bomb(path)
    setup = f"""
from tfrecord.pipe import read_fifo
os.makedirs(sagemaker.data_dir())
os.mkfifo(sagemaker.fifo_path("train", 0))
def write():
    with open({str(path)!r}, "rb") as src, open(sagemaker.fifo_path("train", 0), "wb") as fifo:
        while chunk := src.read(1 << 20):
            fifo.write(chunk)
threading.Thread(target=write, daemon=True).start()
"""
    work = """
inflated = 0
for block in read_fifo("train", 0, {"CompressionType": "Gzip"}, timeout=60):
    inflated += sum(len(record) + 16 for record in block)
"""
    inflated, growth = _measure(tmp_path, setup, work)
    assert inflated == size
    assert growth < GROWTH_LIMIT, f"the reader grew by {growth >> 20} MiB"


def test_a_record_claiming_more_than_a_record_may_hold_is_refused_at_its_header():
    """A header with a valid CRC that claims 1 TiB: one line naming the offset, before a byte of it is held."""
    import struct

    from tfrecord.errors import CorruptRecordError
    from tfrecord.framing import RecordSplitter, masked_crc32c

    length = struct.pack("<Q", 1 << 40)
    claim = length + struct.pack("<I", masked_crc32c(length))
    splitter = RecordSplitter("train_0")
    assert splitter.feed(frame(b"fine")) == [b"fine"]
    with pytest.raises(CorruptRecordError, match=r"^train_0: corrupt record at byte 20: record length 1099511627776 "
                                                 r"is over the 64 MiB a record may hold$"):
        splitter.feed(claim + bytes(100))
