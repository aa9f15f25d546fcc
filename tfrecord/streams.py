"""Byte streams in bounded pieces: the block size, a pipe's buffer, gzip inflation.

One place for what every reader and writer of a stream shares (the Pipe reader, the Pipe feeder, the
files reader, the stderr filter): how much is read or written at a time, how large a pipe's buffer is
asked to be, and how a gzip stream is inflated without ever holding more than one block of its output.
"""
import contextlib
import fcntl
import zlib

BLOCK_SIZE = 1 << 20  # bytes per read, per inflated piece, and the pipe buffer asked for
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; fcntl names it from Python 3.10
GZIP_MAGIC = b"\x1f\x8b"
_GZIP_OR_ZLIB = 47  # zlib's wbits: 32 (detect a gzip or zlib header) + 15 (the largest window)


def widen_pipe(fd, size=BLOCK_SIZE):
    """Ask Linux for a `size`-byte pipe buffer on `fd` (default 64 KiB): fewer, larger reads and writes,
    room for a burst. Best effort: elsewhere, or above /proc/sys/fs/pipe-max-size, nothing changes."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)


class Inflater:
    """A gzip stream (one or more members back to back, as `gzip`/`gunzip` read them) inflated in pieces of
    at most `piece` bytes, however much the input inflates to.

    feed(data) yields the pieces that `data` completes (zlib.error on data that is not gzip); `inside` is
    true between a member's first byte and its end; finish() raises EOFError when the stream ends there.
    """

    def __init__(self, piece=BLOCK_SIZE):
        self.piece = piece
        self._inflate = zlib.decompressobj(wbits=_GZIP_OR_ZLIB)
        self.inside = False

    def feed(self, data):
        more = bool(data)
        while more:
            self.inside = True
            out = self._inflate.decompress(data, self.piece)
            if out:
                yield out
            if self._inflate.eof:  # a member ended: what follows is the next member
                data, self.inside = self._inflate.unused_data, False
                self._inflate = zlib.decompressobj(wbits=_GZIP_OR_ZLIB)
                more = bool(data)
            else:  # input left over, or all used with output perhaps still held back
                data = self._inflate.unconsumed_tail
                more = bool(data) or len(out) == self.piece

    def finish(self):
        if self.inside:  # as the gzip module says it
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
