"""The SageMaker agent's side of Pipe mode, on this machine: `<channel>_<epoch>` FIFOs fed epoch after epoch.

Per epoch the agent creates the FIFO, waits for the trainer to open it, streams the channel's objects
into it (key order, or shuffled by the ShuffleConfig seed per epoch, split by host for ShardedByS3Key),
raw-concatenated or one RecordIO record per object, gunzipped for `CompressionType: Gzip`, then closes it.
Used by `launch local`, the tests and the benchmarks alike.
"""
import contextlib
import errno
import fcntl
import os
import random
import sys
import threading
import time
import zlib

from tfrecord import sagemaker, storage
from tfrecord.recordio import recordio_encode

CHUNK = 1 << 20


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
        with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups than the 64 KiB default
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
        return fd
    return None


def _object_payloads(uri, config):
    """The bytes SageMaker puts in the pipe for one object: gunzipped if Gzip, one RecordIO record if wrapped."""
    gunzip = zlib.decompressobj(wbits=47) if config["CompressionType"] == "Gzip" else None
    with storage.open(uri) as f:
        chunks = iter(lambda: f.read(CHUNK), b"")
        if config["RecordWrapperType"] == "RecordIO":
            data = b"".join(chunks)
            yield len(data), recordio_encode(gunzip.decompress(data) + gunzip.flush() if gunzip else data)
            return
        for chunk in chunks:
            yield len(chunk), gunzip.decompress(chunk) if gunzip else chunk
        if gunzip:
            yield 0, gunzip.flush()


def _send_object(pipe, uri, config):
    """Stream one object into the pipe; yield the object's bytes sent after each piece.

    On Linux a local object sent as is goes file -> pipe inside the kernel (splice), never copied through Python.
    """
    plain = config["CompressionType"] == "None" and config["RecordWrapperType"] == "None"
    if not (plain and hasattr(os, "splice") and not storage.is_s3(uri)):
        for size, payload in _object_payloads(uri, config):
            pipe.write(payload)
            yield size
        return
    pipe.flush()
    with storage.open(uri) as f:
        while sent := os.splice(f.fileno(), pipe.fileno(), CHUNK):
            yield sent


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
            with os.fdopen(fd, "wb") as pipe:
                try:
                    for uri, _ in batch:
                        where = f"{label}_{epoch}: {uri}"
                        for size in _send_object(pipe, uri, config):
                            done += size
                            progress.update(f"{label}_{epoch}", done, total)
                except BrokenPipeError:  # the reader stopped early (e.g. training ended): this epoch's stream ends here
                    note = ", closed by the reader"
            progress.update(f"{label}_{epoch}", done, total, final=True, note=note)
            epoch += 1
    except Exception as e:  # the job fails at once with this reason (launch local watches `errors`)
        kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
        errors.append(f"pipe {where}: {kind}: {e}")
        stop.set()
