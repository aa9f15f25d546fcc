"""The SageMaker agent's side of Pipe mode, on this machine: `<channel>_<epoch>` FIFOs fed epoch after epoch.

Per epoch the agent creates the FIFO, waits for the trainer to open it, streams the channel's objects
into it (key order, or shuffled by the ShuffleConfig seed per epoch, split by host for ShardedByS3Key),
raw-concatenated or one RecordIO record per object, gunzipped for `CompressionType: Gzip`, then closes it.
It holds one block (1 MiB) of an object at a time, whatever the object inflates to. A reader that closes
the FIFO early (training ended) ends that epoch's stream; the agent goes on to the next FIFO.
Used by `launch local`, the tests and the benchmarks alike.
"""
import errno
import os
import random
import sys
import threading
import time

from tfrecord import sagemaker, storage
from tfrecord.recordio import recordio_frame
from tfrecord.streams import BLOCK_SIZE, Inflater, widen_pipe


def objects_for_host(objects, config, epoch, host_index=0, host_count=1):
    """The objects one host receives in one epoch: key order, or shuffled (seed, epoch), then sharded by key."""
    objects = list(objects)
    seed = config.get("ShuffleConfig", {}).get("Seed")
    if seed is not None:
        random.Random(f"{seed}/{epoch}").shuffle(objects)
    if config["S3DistributionType"] == "ShardedByS3Key":
        objects = objects[host_index::host_count]
    return objects


class Progress:
    """Bytes streamed per channel and epoch: a live bar on a terminal, one line per epoch otherwise."""

    def __init__(self, stream=None):
        self.stream, self.lock = stream or sys.stderr, threading.Lock()
        self.live = self.stream.isatty()

    def update(self, label, done, total, final=False, note=""):
        if not (self.live or final):
            return
        fraction = done / total if total else 1.0
        bar = "#" * int(20 * fraction)
        line = f"pipe {label:<14} [{bar:<20}] {done / 1e6:8.2f} / {total / 1e6:.2f} MB{note}"
        with self.lock:
            self.stream.write(("\r" if self.live else "") + line + ("\n" if final else ""))
            self.stream.flush()


def _open_fifo_for_writing(path, stop):
    """Wait for the trainer to open the FIFO (without blocking past `stop`); a blocking fd, or None."""
    start = time.monotonic()
    while not stop.is_set():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            time.sleep(sagemaker.fifo_poll_interval(time.monotonic() - start))
            continue
        os.set_blocking(fd, True)
        widen_pipe(fd)  # fewer wake-ups than the 64 KiB default
        return fd
    return None


def _object_bytes(uri):
    """The object's bytes, a block at a time."""
    with storage.open(uri) as f:
        while chunk := f.read(BLOCK_SIZE):
            yield chunk


def _pieces(uri, config):
    """(object bytes read, bytes for the pipe) a block at a time: gunzipped for Gzip, each piece at most a
    block however much the object inflates."""
    if config["CompressionType"] != "Gzip":
        for chunk in _object_bytes(uri):
            yield len(chunk), chunk
        return
    inflater = Inflater()
    for chunk in _object_bytes(uri):
        read = len(chunk)
        for piece in inflater.feed(chunk):
            yield read, piece
            read = 0
        if read:
            yield read, b""
    inflater.finish()


def _write(fd, data):
    """All of `data` into the pipe, unbuffered: nothing is left to flush when the reader has gone."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send_object(fd, uri, size, config):
    """Stream one object into the pipe, as SageMaker puts it there: its bytes (gunzipped if Gzip), or one
    RecordIO record of them; yield the object's bytes read so far after each piece. Holds a block at a time:
    a RecordIO record of a Gzip object is counted in one pass and streamed in a second.

    On Linux a local object sent as is goes file -> pipe inside the kernel (splice), never copied through Python.
    """
    plain = config["CompressionType"] == "None" and config["RecordWrapperType"] == "None"
    if plain and hasattr(os, "splice") and not storage.is_s3(uri):
        with storage.open(uri) as f:
            while sent := os.splice(f.fileno(), fd, BLOCK_SIZE):
                yield sent
        return
    if config["RecordWrapperType"] != "RecordIO":
        for read, piece in _pieces(uri, config):
            _write(fd, piece)
            yield read
        return
    length = size if config["CompressionType"] == "None" else sum(len(p) for _, p in _pieces(uri, config))
    read = 0

    def payload():
        nonlocal read
        for n, piece in _pieces(uri, config):
            read += n
            yield piece

    for out in recordio_frame(length, payload()):
        _write(fd, out)
        if read:
            yield read
            read = 0


def feed_pipe(channel, objects, config, progress, stop, errors, *, host_index=0, host_count=1, data_dir=None,
              label=None):
    """Epoch after epoch: create `<channel>_<epoch>` (in `data_dir`, default this process's container root),
    stream this host's objects into it, close it. An error is appended to `errors` and stops every feeder;
    `label` (default the channel) names the stream in progress lines and errors."""
    label = label or channel
    where = label  # what an error names: the stream, then the object being sent
    try:
        epoch = 0
        while not stop.is_set():
            path = sagemaker.fifo_path(channel, epoch, data_dir)
            os.mkfifo(path)
            fd = _open_fifo_for_writing(path, stop)
            if fd is None:
                return
            batch = objects_for_host(objects, config, epoch, host_index, host_count)
            total, done, note = sum(size for _, size in batch), 0, ""
            try:
                for uri, size in batch:
                    where = f"{label}_{epoch}: {uri}"
                    for read in _send_object(fd, uri, size, config):
                        done += read
                        progress.update(f"{label}_{epoch}", done, total)
            except BrokenPipeError:  # the reader stopped early (e.g. training ended): this epoch's stream ends here
                note = ", closed by the reader"
            finally:
                os.close(fd)
            progress.update(f"{label}_{epoch}", done, total, final=True, note=note)
            epoch += 1
    except Exception as e:  # the job fails at once with this reason (launch local watches `errors`)
        kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
        errors.append(f"pipe {where}: {kind}: {e}")
        stop.set()
