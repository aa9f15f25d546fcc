"""SageMaker's RecordIO wrapping (MXNet recordio), the format of a `RecordWrapperType: RecordIO` channel.

Each payload: uint32 magic | uint32 cflag << 29 | length | data | zero padding to 4 bytes; payloads longer
than the 29-bit length field are split into parts (cflag 1 first, 2 middle, 3 last). Plain bytes, no
TensorFlow: `launch local`'s Pipe agent encodes with it, the Pipe reader decodes.
"""
import struct

from tfrecord.errors import CorruptRecordError

RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_HEADER = struct.Struct("<II")
_RECORDIO_MAX = (1 << 29) - 1  # the length field has 29 bits; longer payloads are split into parts


def recordio_encode(payload):
    """One payload as SageMaker's RecordIO (MXNet recordio): magic, cflag|length, data, pad to 4 bytes."""
    parts = [payload[i:i + _RECORDIO_MAX] for i in range(0, len(payload), _RECORDIO_MAX)] or [b""]
    out = []
    for i, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else 1 if i == 0 else 3 if i == len(parts) - 1 else 2
        out += [_RECORDIO_HEADER.pack(RECORDIO_MAGIC, cflag << 29 | len(part)), part, b"\0" * (-len(part) % 4)]
    return b"".join(out)


class RecordIOUnwrapper:
    """Feed RecordIO bytes, get the payload bytes back (parts of a split payload joined in order)."""

    def __init__(self, source):
        self.source, self.offset, self._buffer = source, 0, b""

    def feed(self, chunk):
        buf, pos, out = self._buffer + chunk, 0, []
        while len(buf) - pos >= _RECORDIO_HEADER.size:
            magic, lrecord = _RECORDIO_HEADER.unpack_from(buf, pos)
            if magic != RECORDIO_MAGIC:
                raise CorruptRecordError(self.source, self.offset + pos, "bad RecordIO magic (is the channel RecordIO-wrapped?)")
            length = lrecord & _RECORDIO_MAX
            end = pos + _RECORDIO_HEADER.size + length + (-length % 4)
            if end > len(buf):
                break
            out.append(buf[pos + _RECORDIO_HEADER.size:pos + _RECORDIO_HEADER.size + length])
            pos = end
        self._buffer, self.offset = buf[pos:], self.offset + pos
        return b"".join(out)

    def finish(self):
        if self._buffer:
            raise CorruptRecordError(self.source, self.offset, "stream ends inside a RecordIO record")
