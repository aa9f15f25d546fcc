"""SageMaker's RecordIO wrapping (MXNet recordio), the format of a `RecordWrapperType: RecordIO` channel.

Each payload: uint32 magic | uint32 cflag << 29 | length | data | zero padding to 4 bytes; payloads longer
than the 29-bit length field are split into parts (cflag 1 first, 2 middle, 3 last). Plain bytes, no
TensorFlow: `launch local`'s Pipe agent frames with it, the Pipe reader unwraps. Both stream: neither holds
a payload, only the piece at hand.
"""
import struct

from tfrecord.errors import CorruptRecordError

RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_HEADER = struct.Struct("<II")
_RECORDIO_MAX = (1 << 29) - 1  # the length field has 29 bits; longer payloads are split into parts


def recordio_frame(length, pieces):
    """A payload of `length` bytes, given as `pieces` (bytes-like, any sizes), framed as RecordIO without
    holding it: yields headers, the pieces (cut at part boundaries) and padding, to write in order.
    Raises ValueError when the pieces do not add up to `length`."""
    parts = [min(_RECORDIO_MAX, length - start) for start in range(0, length, _RECORDIO_MAX)] or [0]
    pieces, piece = iter(pieces), memoryview(b"")
    for i, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else 1 if i == 0 else 3 if i == len(parts) - 1 else 2
        yield _RECORDIO_HEADER.pack(RECORDIO_MAGIC, cflag << 29 | part)
        left = part
        while left:
            while not piece:
                following = next(pieces, None)
                if following is None:
                    short = left + sum(parts[i + 1:])
                    raise ValueError(f"the payload ended {short} bytes short of the {length} it was framed for")
                piece = memoryview(following)
            yield piece[:left]
            left, piece = left - len(piece[:left]), piece[left:]
        yield b"\0" * (-part % 4)
    if piece or any(pieces):
        raise ValueError(f"the payload is longer than the {length} bytes it was framed for")


def recordio_encode(payload):
    """One payload as SageMaker's RecordIO (MXNet recordio): magic, cflag|length, data, pad to 4 bytes."""
    return b"".join(recordio_frame(len(payload), [payload]))


class RecordIOUnwrapper:
    """Feed RecordIO bytes, get the payload bytes back (parts of a split payload joined in order), as they
    come: what one feed returns is at most what it was given."""

    def __init__(self, source):
        self.source, self.offset = source, 0  # offset: of the start of the next chunk fed, in the stream
        self._header, self._left, self._padding = b"", 0, 0  # header bytes so far; payload, padding still to come

    def feed(self, chunk):
        out, pos = [], 0
        while pos < len(chunk):
            if self._left:
                piece = chunk[pos:pos + self._left]
                out.append(piece)
                self._left -= len(piece)
                pos += len(piece)
            elif self._padding:
                skipped = min(self._padding, len(chunk) - pos)
                self._padding -= skipped
                pos += skipped
            else:
                taken = chunk[pos:pos + _RECORDIO_HEADER.size - len(self._header)]
                self._header += taken
                pos += len(taken)
                if len(self._header) == _RECORDIO_HEADER.size:
                    magic, lrecord = _RECORDIO_HEADER.unpack(self._header)
                    if magic != RECORDIO_MAGIC:
                        raise CorruptRecordError(self.source, self.offset + pos - _RECORDIO_HEADER.size,
                                                 "bad RecordIO magic (is the channel RecordIO-wrapped?)")
                    self._header, self._left = b"", lrecord & _RECORDIO_MAX
                    self._padding = -self._left % 4
        self.offset += len(chunk)
        return b"".join(out)

    def finish(self):
        if self._header or self._left or self._padding:
            raise CorruptRecordError(self.source, self.offset, "stream ends inside a RecordIO record")
