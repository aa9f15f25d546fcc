"""What a path or bytes that are not a TFRecord shard are, and how to read them instead.

`open_regular` opens a shard only if it is a regular file: a FIFO, device or folder in its place is one
line naming it, never a read that blocks or does not end. A TFRecord reader meeting a record header
whose CRC fails asks `identify` about the bytes there, so a gzip-compressed shard read as plain, a
RecordIO stream read unwrapped, or an image or archive in place of a shard is named as what it is
rather than as a CRC mismatch.
"""
import os
import stat
import struct

from tfrecord.errors import UserError
from tfrecord.recordio import RECORDIO_MAGIC
from tfrecord.streams import GZIP_MAGIC

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

_EXAMPLES = "shards hold tf.train.Example records: write them with `captcha-pipeline generate`"
# (first bytes, what the data is, how to read it)
KINDS = (
    (GZIP_MAGIC, "gzip-compressed data",
     "decompress it first (gunzip), or read it through a Pipe channel with CompressionType Gzip"),
    (struct.pack("<I", RECORDIO_MAGIC), "RecordIO-wrapped data",
     "read it through a Pipe channel with RecordWrapperType RecordIO"),
    (b"BZh", "bzip2-compressed data", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "decompress it first (unzstd)"),
    (b"PK\x03\x04", "a zip archive", "extract its TFRecord shards first"),
    (PNG_SIGNATURE, "a PNG image", _EXAMPLES),
    (JPEG_SIGNATURE, "a JPEG image", _EXAMPLES),
)


def identify(head):
    """(what the data is, how to read it) for bytes starting with a known magic number; None otherwise."""
    for magic, what, advice in KINDS:
        if head.startswith(magic):
            return what, advice
    return None


def file_kind(mode):
    """What a file of `mode` (os.stat's st_mode) is, in the words every refusal uses: "a folder", "a FIFO",
    "a device", "a socket", else "a file"."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a file"


def not_regular(mode):
    """None when `mode` (os.stat's st_mode) is a regular file's, else why not, in the one wording of every
    command (flags, readers, image files): "is a FIFO, not a regular file"."""
    return None if stat.S_ISREG(mode) else f"is {file_kind(mode)}, not a regular file"


def check_regular(path, what="shard"):
    """UserError unless `path` (symlinks followed) is a regular file; stat never blocks, even on a FIFO."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    if not_regular(mode):
        raise UserError(f"{path}: {not_regular(mode)} (a {what} must be one)")


def open_regular(path, what="shard"):
    """`path` opened for reading (binary, unbuffered) if it is a regular file, else UserError naming it.

    Opened with O_NONBLOCK, so a FIFO without a writer cannot block the open, then checked with fstat on
    the open descriptor (no window between the check and the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not_regular(mode):
            raise UserError(f"{path}: {not_regular(mode)} (a {what} must be one)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
