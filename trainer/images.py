"""The one policy for the images a model reads, checked before TensorFlow decodes anything.

Accepted: PNG (any bit depth and colour type, one still image) and 8-bit baseline or progressive JPEG
(grayscale or colour), at the model's render size (`spec.width` x `spec.height`, downscaled inside the
model) or at its stored size (`spec.store_size`), at most `MAX_IMAGE_BYTES` long. Everything else is refused
with a one-line reason, in this order and at this cost:
  1. size and header: the file's length, the PNG IHDR or JPEG frame header (so a 388 KB PNG that claims
     20000x20000 pixels costs nothing);
  2. the work decoding would take, bounded by what the header declares: a PNG has at most `MAX_PARTS` chunks,
     its compressed image data at most `png_image_data_limit` bytes (twice its rows + 1 KiB: no encoder
     writes more), and that data is inflated here at most one byte past what its rows need
     (`png_image_data_bytes`), so data that inflates to gigabytes behind a 120x100 header costs a 120x100
     image's work; a JPEG may have at most `MAX_JPEG_SCANS` start-of-scan markers (each scan is a pass over
     the image) and `MAX_PARTS` segments, and must end with its end-of-image marker (so libjpeg never meets
     a truncated one). PNG's compressed ancillary chunks (zTXt, iTXt, iCCP) are left to libpng, which caps
     what it inflates for them (a 4 MB zTXt bomb costs TensorFlow's decoder under 0.05 s).
  3. orientation: a JPEG whose EXIF Orientation is not 1 (upright) is refused (`JPEG_ORIENTED`): a viewer
     shows it turned or mirrored, the model would read it as stored, and turning it in-graph the same way in
     every path is more machinery than asking for an upright image.
Pixels are decoded, and transparency composited onto white, by the SavedModel's bytes signature
(`trainer.export.decode_images`), which `predict` and `serve` call and TF Serving calls after
`launch deploy`. It checks in-graph, with the same words, all of this but the inflation itself and the
JPEG's segment walk (it asks only that an end-of-image marker occur): file length, format, size, a JPEG's
colour components, scans and orientation, a PNG's chunk count and image data length, so the work TF Serving spends on
any input is bounded by an accepted image's size too.
`read_file` is the one way a named image file is read. Pure Python: no TensorFlow, no PIL.
"""
import os
import re
import struct
import zlib

from tfrecord.content import JPEG_SIGNATURE, PNG_SIGNATURE, not_regular

MAX_IMAGE_BYTES = 4 << 20  # no PNG or JPEG of a captcha's size comes near it
MAX_JPEG_SCANS = 64  # start-of-scan markers; libjpeg writes 6 (grayscale) or 10 (colour) scans for a progressive JPEG
MAX_PARTS = 4096  # PNG chunks or JPEG marker segments; a captcha has a few dozen
JPEG_SCAN = b"\xff\xda"  # start of scan; counted in the file's bytes here and in the bytes signature alike
JPEG_END = b"\xff\xd9"  # end of image
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel, by colour type
# Adam7's seven passes: first column and row, column and row steps
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by colour type
JPEG_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")  # after entropy-coded data (FF 00 is a stuffed FF)
JPEG_COMPONENTS = "JPEG with {} colour components (CMYK?): send grayscale or RGB"  # also tf.strings.format's
TOO_MANY_SCANS = f"JPEG with more than {MAX_JPEG_SCANS} scans: send a baseline or ordinary progressive JPEG"
JPEG_TRUNCATED = "truncated JPEG (no end-of-image marker)"  # wherever it was cut
# EXIF's Orientation entry (TIFF tag 0x0112, one SHORT) with a value other than 1 (upright), in either byte order:
# a viewer turns or mirrors such an image, which the model would read unturned, so it is refused
JPEG_ORIENTATIONS = tuple(entry for value in range(2, 9) for entry in (
    b"\x01\x12\x00\x03\x00\x00\x00\x01\x00" + bytes([value]), b"\x12\x01\x03\x00\x01\x00\x00\x00" + bytes([value, 0])))
JPEG_ORIENTED = ("JPEG with an EXIF orientation (shown turned or mirrored): save it upright, without the "
                 "orientation tag")
# also tf.strings.format's template in the bytes signature (no quote marks: tf.debugging.Assert escapes them)
PNG_DATA_TOO_LONG = "PNG image data is {} bytes: more than the rows of a {}x{} image take ({} at most)"
TOO_MANY_CHUNKS = f"PNG with more than {MAX_PARTS} chunks: not a captcha image"
TOO_LARGE = f"larger than {MAX_IMAGE_BYTES} bytes: not a captcha image"
JPEG_FRAMES = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}  # the ones we decode
JPEG_OTHER_FRAMES = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
                     0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded", 0xCB: "arithmetic-coded",
                     0xCD: "arithmetic-coded", 0xCE: "arithmetic-coded", 0xCF: "arithmetic-coded"}


class Refused(ValueError):
    """An image the model does not read; the message says why."""


def _png_header(data):
    """(width, height, bit depth, colour type, interlace) from IHDR."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise Refused("truncated or malformed PNG (no IHDR header)")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if not (width and height) or depth not in PNG_BIT_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise Refused("malformed PNG header")
    return width, height, depth, colour, interlace


def _png_chunks(data):
    """(kind, body) of each chunk after IHDR, up to IEND; Refused if one is cut short or there is no IEND."""
    offset, image_data, parts = 33, False, 0
    while True:
        if offset + 8 > len(data):
            raise Refused("truncated PNG (no IEND chunk)" if image_data else "truncated PNG (no image data)")
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        image_data |= kind == b"IDAT"
        if offset + 12 + length > len(data):
            raise Refused(f"truncated PNG ({kind.decode('latin-1')!r} chunk cut short)")
        if kind == b"IEND":
            return
        parts += 1
        if parts > MAX_PARTS:
            raise Refused(TOO_MANY_CHUNKS)
        yield kind, data[offset + 8:offset + 8 + length]
        offset += 12 + length


def _png_size(data):
    """(width, height) from IHDR, after checking the chunks up to the first IDAT."""
    width, height, *_ = _png_header(data)
    for kind, _ in _png_chunks(data):
        if kind == b"IDAT":
            return width, height
        if kind == b"acTL":
            raise Refused("animated PNG: send one still image")
    raise Refused("truncated PNG (no image data)")


def png_image_data_bytes(width, height, bits, interlaced):
    """The bytes a PNG's image data inflates to, for pixels of `bits` bits: per row one filter byte and its packed
    samples, for each of Adam7's seven passes if interlaced (PNG specification, sections 7.2 and 8.2). Works on
    ints and on int64 tensors (the bytes signature's check) alike; `interlaced` is a bool."""
    total = 0
    for x0, y0, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        columns, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        total += (1 - 1 // (columns + 1)) * rows * (1 + (columns * bits + 7) // 8)  # a pass without columns has no rows
    return total


def png_image_data_limit(needed):
    """The most bytes a PNG's compressed image data may take for rows of `needed` bytes: twice them and 1 KiB,
    above any encoder's stored (uncompressed) blocks, even one block per row. What inflating it may cost is
    then bounded by the header (deflate inflates at most ~1,032 bytes per byte), here and in the bytes
    signature, which TF Serving runs. Works on ints and on TensorFlow tensors."""
    return 2 * needed + 1024


def _png_data_problem(data):
    """None if the PNG's image data is at most `png_image_data_limit` bytes and inflates to exactly what its
    header's rows need, else why not. The zlib stream is inflated at most one byte past that, so the work is
    bounded by the header, not by the data."""
    width, height, depth, colour, interlace = _png_header(data)
    needed = png_image_data_bytes(width, height, depth * PNG_CHANNELS[colour], interlace == 1)
    compressed = b"".join(body for kind, body in _png_chunks(data) if kind == b"IDAT")
    if len(compressed) > png_image_data_limit(needed):
        return PNG_DATA_TOO_LONG.format(len(compressed), width, height, png_image_data_limit(needed))
    inflater = zlib.decompressobj()
    try:
        rows = inflater.decompress(compressed, needed + 1)
        if len(rows) == needed and not inflater.eof:  # what is left may only end the stream
            rows += inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error as e:
        return f"corrupt PNG image data ({e})"
    if len(rows) > needed:
        return f"PNG image data inflates past the {needed} bytes its {width}x{height} header needs"
    if len(rows) < needed or not inflater.eof:
        return "truncated PNG image data"
    return None


def _jpeg_size(data):
    """(width, height) from the frame header (SOFn), walking the marker segments before it."""
    offset = 2
    while True:
        if offset >= len(data) or data[offset] != 0xFF:
            raise Refused("truncated or malformed JPEG (no frame header)")
        while offset < len(data) and data[offset] == 0xFF:  # a marker, after any fill bytes
            offset += 1
        if offset + 3 > len(data):
            raise Refused("truncated JPEG (no frame header)")
        marker = data[offset]
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            raise Refused("malformed JPEG (scan before the frame header)")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a segment
            offset += 1
            continue
        length = struct.unpack(">H", data[offset + 1:offset + 3])[0]
        if marker in JPEG_OTHER_FRAMES:
            raise Refused(f"{JPEG_OTHER_FRAMES[marker]} JPEG: send a baseline or progressive JPEG")
        if marker in JPEG_FRAMES:
            if offset + 9 > len(data):
                raise Refused("truncated JPEG (frame header)")
            precision, height, width, components = struct.unpack(">BHHB", data[offset + 3:offset + 9])
            if precision != 8:
                raise Refused(f"{precision}-bit JPEG: send an 8-bit JPEG")
            if components not in (1, 3):
                raise Refused(JPEG_COMPONENTS.format(components))
            if not (width and height):
                raise Refused("malformed JPEG frame header")
            return width, height
        offset += 1 + length


def _jpeg_data_problem(data):
    """None if the JPEG has at most `MAX_JPEG_SCANS` start-of-scan markers and whole segments and scans up to
    its end-of-image marker; else why not. Walks the marker segments, at most `MAX_PARTS`, and skips each scan's
    entropy-coded data (ITU T.81, B.1)."""
    if data.count(JPEG_SCAN) > MAX_JPEG_SCANS:  # each scan is a pass over the whole image
        return TOO_MANY_SCANS
    if any(entry in data for entry in JPEG_ORIENTATIONS):
        return JPEG_ORIENTED
    offset = 2
    for _ in range(MAX_PARTS):
        marker = JPEG_NEXT_MARKER.match(data, offset)
        if marker is None:
            return JPEG_TRUNCATED if offset >= len(data) - 1 else "malformed JPEG (bytes between segments)"
        kind, offset = data[marker.end() - 1], marker.end()
        if kind == 0xD9:  # end of image
            return None
        if kind == 0x01:  # TEM: no segment
            continue
        if offset + 2 > len(data):
            return JPEG_TRUNCATED
        length = struct.unpack(">H", data[offset:offset + 2])[0]
        if length < 2 or offset + length > len(data):
            return JPEG_TRUNCATED if length >= 2 else "malformed JPEG (segment length)"
        offset += length
        if kind == 0xDA:  # start of scan: its entropy-coded data runs to the next marker that is not a restart
            after = JPEG_NEXT_MARKER.search(data, offset)
            if after is None:
                return JPEG_TRUNCATED
            offset = after.start()
    return f"JPEG with more than {MAX_PARTS} marker segments: not a captcha image"


def _regular_file(status):
    """Refused unless `status` (an os.stat result) is a regular file's of at most MAX_IMAGE_BYTES."""
    if not_regular(status.st_mode):
        raise Refused(not_regular(status.st_mode))
    if status.st_size > MAX_IMAGE_BYTES:
        raise Refused(TOO_LARGE)


def read_file(path):
    """The bytes of the image file at `path`, which must be a regular file of at most `MAX_IMAGE_BYTES`: checked
    before it is opened (a FIFO, a device such as /dev/zero or a folder is never read) and again once open, and
    never more than the cap + 1 bytes read. Raises Refused with the reason (the OS's, for a file it cannot open)."""
    try:
        _regular_file(os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # replaced by a FIFO since: still no block
        with open(fd, "rb") as f:
            _regular_file(os.fstat(fd))
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise Refused(e.strerror or str(e)) from None
    if len(data) > MAX_IMAGE_BYTES:
        raise Refused(TOO_LARGE)
    return data


def header(data):
    """("png" | "jpeg", width, height) read from the header of encoded image bytes; Refused if neither."""
    if data.startswith(PNG_SIGNATURE):
        return ("png", *_png_size(data))
    if data.startswith(JPEG_SIGNATURE):
        return ("jpeg", *_jpeg_size(data))
    if not data:
        raise Refused("empty: no image bytes")
    raise Refused("not a PNG or JPEG image")


def accepted_sizes(spec):
    """The (width, height) pairs a model reads: its render size, then its stored size (often the same)."""
    return list(dict.fromkeys([spec.render_size, spec.store_size]))


def refusal(data, spec):
    """None if the model reads these image bytes, else the reason it does not (one line). Costs at most the
    work of one image of an accepted size (see the module doc), whatever the bytes claim."""
    if len(data) > MAX_IMAGE_BYTES:
        return TOO_LARGE
    try:
        kind, width, height = header(data)
    except Refused as e:
        return str(e)
    sizes = accepted_sizes(spec)
    if (width, height) not in sizes:
        return f"image is {width}x{height}, the model reads {' or '.join(f'{w}x{h}' for w, h in sizes)}"
    try:
        return _png_data_problem(data) if kind == "png" else _jpeg_data_problem(data)
    except Refused as e:
        return str(e)
