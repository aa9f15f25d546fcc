"""The Pipe reader: SageMaker Pipe mode without a compiled op, TFRecords from the `<channel>_<epoch>` FIFOs.

`tf.data.TFRecordDataset` cannot read a FIFO ("Illegal seek"), and AWS's PipeModeDataset is built
only up to TF 2.14. This reader is pure Python + tf.data: it reads each FIFO in large blocks, verifies
both CRCs of every record (errors name channel, epoch and byte offset) and hands tf.data batches
(tfrecord/batching.py). It never blocks without a bound: the FIFO is opened without waiting for a
writer, and `timeout` covers a FIFO that never appears, one that never gets a writer, and a writer
that stalls. With a record count (FullyReplicated channels), each FIFO must hold exactly that many.

repeat=False: every new iteration of the dataset (each Keras epoch) reads the next FIFO to its end.
repeat=True: one endless stream, FIFO after FIFO, each read to its end; the FIFO being read is closed
when the iterator is closed or destroyed, so the agent is never left blocked on a full pipe.
"""
import itertools
import os
import select
import time
import zlib

from tfrecord import batching, sagemaker
from tfrecord.errors import CorruptRecordError, ManifestError, UserError
from tfrecord.framing import RecordSplitter
from tfrecord.recordio import RecordIOUnwrapper
from tfrecord.spec import CaptchaSpec
from tfrecord.streams import BLOCK_SIZE, GZIP_MAGIC, Inflater, widen_pipe


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
    start = time.monotonic()
    while not os.path.exists(path):
        waited = time.monotonic() - start
        if waited > timeout:
            raise UserError(f"{source}: FIFO {path} did not appear within {timeout:g} s")
        time.sleep(sagemaker.fifo_poll_interval(waited))


def _chunks(fd, path, source, timeout):
    """Bytes from the FIFO until its writer closes it; no data for `timeout` seconds is an error."""
    poller, offset = select.poll(), 0
    poller.register(fd, select.POLLIN)
    while True:
        if not poller.poll(timeout * 1000):
            raise UserError(f"{source}: no data from FIFO {path} for {timeout:g} s at byte {offset} "
                            "(no writer opened it, or the writer stalled)")
        try:
            chunk = os.read(fd, BLOCK_SIZE)
        except BlockingIOError:
            continue
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def read_fifo(channel, epoch, config, *, records=None, timeout=300):
    """Yield blocks of verified serialized records from one epoch's FIFO, until its writer closes it."""
    source = f"channel {channel} epoch {epoch}"
    path = sagemaker.fifo_path(channel, epoch)
    _wait_for(path, source, timeout)
    splitter, count = RecordSplitter(source), 0
    unwrap = RecordIOUnwrapper(source) if config.get("RecordWrapperType", "None") == "RecordIO" else None
    gunzip = _Gunzip(source) if config.get("CompressionType") == "Gzip" else None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a blocking open would wait for a writer without bound
    try:
        widen_pipe(fd)
        for chunk in _chunks(fd, path, source, timeout):
            for piece in gunzip.feed(chunk) if gunzip else [chunk]:  # a block at most, however much it inflates
                block = splitter.feed(unwrap.feed(piece) if unwrap else piece)
                count += len(block)
                if block:
                    yield block
        if gunzip:
            gunzip.finish()
        if unwrap:
            unwrap.finish()
        splitter.finish()
    finally:
        os.close(fd)
    if records is not None and count != records:
        raise ManifestError(f"{source}: the FIFO held {count} records, the dataset's {channel!r} split has {records} "
                            "(a stream cut short, or objects of another dataset)")


class _Gunzip:
    """SageMaker inflates Gzip channels; a still-compressed stream (gzip members, one per object) is inflated
    here, a block at a time, however much it inflates."""

    def __init__(self, source):
        self.source, self.offset, self._inflater, self._head = source, 0, None, b""

    def feed(self, chunk):
        """Yield the inflated pieces of `chunk` (each at most BLOCK_SIZE), or `chunk` itself for a plain stream."""
        if self._inflater is None:  # undecided until the first two bytes: inflate only a stream that starts as gzip
            self._head += chunk
            if len(self._head) < len(GZIP_MAGIC):
                return
            chunk, self._head = self._head, b""
            self._inflater = Inflater() if chunk.startswith(GZIP_MAGIC) else False
        if self._inflater is False:
            yield chunk
            return
        start, self.offset = self.offset, self.offset + len(chunk)
        try:
            yield from self._inflater.feed(chunk)
        except zlib.error as e:
            raise CorruptRecordError(self.source, start, f"bad gzip data in the {self.offset - start} bytes "
                                                         f"from there ({e})") from None

    def finish(self):
        if self._head or self._inflater and self._inflater.inside:
            raise CorruptRecordError(self.source, self.offset, "stream ends inside a gzip member")


def pipe_dataset(channel: str, spec: CaptchaSpec, batch_size: int, *, records: int | None = None,
                 timeout: float = 300, num_workers: int = 1, worker_index: int = 0, shuffle_buffer: int = 0,
                 seed: int | None = None, repeat: bool = False, deterministic: bool = False, lengths: bool = False) -> "tf.data.Dataset":
    """Pipe-mode channel -> tf.data of (uint8 images [B, H, W, C], int32 labels [B, length]); [H, W, C] =
    spec.input_shape.

    Args:
      channel: the channel's name in inputdataconfig.json; its FIFOs are `<channel>_<epoch>`.
      spec: the CaptchaSpec the records are checked against (the first CHECKED records of each FIFO) and
        decoded with.
      batch_size: examples per batch; the last batch of a FIFO may be shorter.
      records: how many records each FIFO must hold (the split's count on a FullyReplicated channel).
      timeout: seconds a FIFO may take to appear, to get a writer, or between two reads.
      num_workers, worker_index, shuffle_buffer, seed, repeat, deterministic, lengths: see batching.ReadOptions;
        here num_workers > 1 keeps every num_workers-th record.
    Raises:
      UserError (at once) for a channel that is not in Pipe mode; while reading, one line naming the channel,
      epoch and byte offset or record (timeouts, corrupt or other content, a record that disagrees with the
      spec, a wrong record count).
    """
    options = batching.ReadOptions(num_workers, worker_index, shuffle_buffer, seed, repeat, deterministic, lengths)
    config = channel_config(channel)
    fifos = itertools.count()  # shared by every iteration: each opens FIFOs no iteration has read

    def blocks(rng):
        for epoch in fifos if repeat else [next(fifos)]:
            stream = batching.checked(read_fifo(channel, epoch, config, records=records, timeout=timeout), spec,
                                      f"channel {channel} epoch {epoch}")
            yield from batching.every_nth(stream, num_workers, worker_index) if num_workers > 1 else stream

    return batching.dataset(blocks, spec, batch_size, options)
