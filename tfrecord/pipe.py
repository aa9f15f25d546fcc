"""SageMaker Pipe mode without a compiled op: TFRecords from the `<channel>_<epoch>` FIFOs.

`tf.data.TFRecordDataset` cannot read a FIFO ("Illegal seek"), and AWS's PipeModeDataset is built
only up to TF 2.14. This reader is pure Python + tf.data: it reads each FIFO in large blocks,
verifies both CRCs of every record (errors name channel, epoch and byte offset), and hands records to
tf.data in lists. Every new iteration of the dataset (each Keras epoch) opens the next epoch's FIFO,
so `model.fit(epochs=N)` sees exactly one pass per epoch, with memory bounded by one block.
"""
import fcntl
import os
import time
import zlib

import tensorflow as tf

from tfrecord import sagemaker
from tfrecord.errors import UserError
from tfrecord.framing import BLOCK_SIZE, RecordSplitter
from tfrecord.readers import batched
from tfrecord.recordio import RecordIOUnwrapper

_GZIP_MAGIC = b"\x1f\x8b"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def channel_config(channel):
    """The channel's inputdataconfig.json entry; a clear error unless it is a Pipe-mode channel."""
    config = sagemaker.input_data_config()
    if channel not in config:
        raise UserError(f"channel {channel!r} is not in inputdataconfig.json (channels: {sorted(config) or 'none'})")
    mode = config[channel].get("TrainingInputMode", "File")
    if mode != "Pipe":
        raise UserError(f"channel {channel!r} is in {mode} mode, not Pipe: read it from {sagemaker.channel_dir(channel)}")
    return config[channel]


def _wait_for(path, source, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise UserError(f"{source}: FIFO {path} did not appear within {timeout:g} s")
        time.sleep(0.05)


def read_epoch(channel, epoch, config, *, timeout=300, block_size=BLOCK_SIZE):
    """Yield lists of verified serialized records from one epoch's FIFO, until it closes."""
    source = f"channel {channel} epoch {epoch}"
    path = sagemaker.fifo_path(channel, epoch)
    _wait_for(path, source, timeout)
    splitter = RecordSplitter(source)
    unwrap = RecordIOUnwrapper(source) if config.get("RecordWrapperType", "None") == "RecordIO" else None
    gunzip = None
    with open(path, "rb", buffering=0) as fifo:
        _widen(fifo)
        first = True
        while chunk := fifo.read(block_size):
            if first and config.get("CompressionType") == "Gzip" and chunk.startswith(_GZIP_MAGIC):
                gunzip = _Gunzip()  # SageMaker inflates Gzip channels; accept a still-compressed stream too
            first = False
            if gunzip:
                chunk = gunzip.feed(chunk)
            if unwrap:
                chunk = unwrap.feed(chunk)
            records = splitter.feed(chunk)
            if records:
                yield records
    if unwrap:
        unwrap.finish()
    splitter.finish()


def _widen(fifo, size=1 << 20):
    """Ask Linux for a 1 MiB pipe buffer (default 64 KiB): fewer, larger reads. Best effort."""
    try:
        fcntl.fcntl(fifo.fileno(), F_SETPIPE_SZ, size)
    except OSError:
        pass


class _Gunzip:
    """Streaming gunzip across concatenated gzip members (one per S3 object)."""

    def __init__(self):
        self._d = zlib.decompressobj(wbits=47)

    def feed(self, chunk):
        out = []
        while chunk:
            out.append(self._d.decompress(chunk))
            chunk = self._d.unused_data if self._d.eof else b""
            if self._d.eof:
                self._d = zlib.decompressobj(wbits=47)
        return b"".join(out)


class _Epochs:
    """Callable for Dataset.from_generator: each call streams the next epoch's FIFO."""

    def __init__(self, channel, config, **read_kwargs):
        self.channel, self.config, self.read_kwargs, self.epoch = channel, config, read_kwargs, 0

    def __call__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        yield from read_epoch(self.channel, epoch, self.config, **self.read_kwargs)


def pipe_dataset(channel, spec, batch_size, *, timeout=300, block_size=BLOCK_SIZE, num_workers=1, worker_index=0,
                 **kwargs):
    """Pipe-mode channel -> dataset of (images, labels); one FIFO per iteration (epoch), in order.

    num_workers > 1 keeps every num_workers-th record (several hosts on a FullyReplicated channel).
    Other keyword arguments as for `readers.batched` (shuffle_buffer, channels, dtype, ...).
    """
    epochs = _Epochs(channel, channel_config(channel), timeout=timeout, block_size=block_size)
    records = tf.data.Dataset.from_generator(epochs, output_signature=tf.TensorSpec([None], tf.string)).unbatch()
    if num_workers > 1:
        records = records.shard(num_workers, worker_index)
    return batched(records, spec, batch_size, **kwargs)
