"""TFRecord framing with both CRCs verified, usable on any byte stream (files, FIFOs, S3 bodies).

Each record: uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data),
little-endian. Concatenated TFRecord files are a valid TFRecord stream.
"""
import struct

import google_crc32c

from tfrecord import content
from tfrecord.errors import CorruptRecordError, NotTFRecordError
from tfrecord.streams import BLOCK_SIZE

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
MAX_RECORD_BYTES = 64 << 20  # far above any Example of ours (an image is at most 4 MiB): a larger claim is damage


def masked_crc32c(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record):
    """One record -> its TFRecord bytes."""
    length = struct.pack("<Q", len(record))
    return length + _FOOTER.pack(masked_crc32c(length)) + record + _FOOTER.pack(masked_crc32c(record))


class RecordSplitter:
    """Feed arbitrary chunks, get whole verified records back; errors name the source and byte offset.
    Holds at most one record (MAX_RECORD_BYTES) beyond the chunk at hand, whatever a header claims."""

    def __init__(self, source):
        self.source = source
        self.offset = 0  # stream offset of the start of self._buffer
        self._buffer = b""

    def feed(self, chunk):
        buf = self._buffer + chunk if self._buffer else chunk
        pos, records = 0, []
        while len(buf) - pos >= _HEADER.size:
            length, length_crc = _HEADER.unpack_from(buf, pos)
            if masked_crc32c(buf[pos:pos + 8]) != length_crc:
                if kind := content.identify(buf[pos:pos + 16]):
                    raise NotTFRecordError(self.source, self.offset + pos, *kind)
                raise CorruptRecordError(self.source, self.offset + pos, "header (length) CRC mismatch")
            if length > MAX_RECORD_BYTES:  # never buffer a stream's worth of bytes on a header's word
                raise CorruptRecordError(self.source, self.offset + pos, f"record length {length} is over the "
                                                                         f"{MAX_RECORD_BYTES >> 20} MiB a record may hold")
            end = pos + _HEADER.size + length + _FOOTER.size
            if end > len(buf):
                break
            data = buf[pos + _HEADER.size:end - _FOOTER.size]
            if masked_crc32c(data) != _FOOTER.unpack_from(buf, end - _FOOTER.size)[0]:
                raise CorruptRecordError(self.source, self.offset + pos, "payload CRC mismatch")
            records.append(data)
            pos = end
        self._buffer = buf[pos:]
        self.offset += pos
        return records

    def finish(self):
        """Call at end of stream: a partial record left over is an error, never silently dropped."""
        if self._buffer:
            raise CorruptRecordError(
                self.source, self.offset, f"stream ends inside a record ({len(self._buffer)} trailing bytes)")


def read_records(stream, source, block_size=BLOCK_SIZE):
    """Yield verified records from a binary file object, reading in large blocks."""
    splitter = RecordSplitter(source)
    while chunk := stream.read(block_size):
        yield from splitter.feed(chunk)
    splitter.finish()
