"""The one policy for the images a model reads, checked from the file header before anything is decoded.

Accepted: PNG (any bit depth and colour type, one still image) and 8-bit baseline or progressive JPEG
(grayscale or colour), at the model's render size (`spec.width` x `spec.height`, downscaled inside the
model) or at its stored size (`spec.store_size`). Everything else is refused with a reason, so a 388 KB
PNG that claims 20000x20000 pixels costs nothing. `predict` and `serve` apply it; the SavedModel's bytes
signature enforces the same sizes. Pure Python: no TensorFlow, no PIL.
"""
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MAX_IMAGE_BYTES = 4 << 20  # no PNG or JPEG of a captcha's size comes near it
PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by colour type
JPEG_FRAMES = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}  # the ones we decode
JPEG_OTHER_FRAMES = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
                     0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded", 0xCB: "arithmetic-coded",
                     0xCD: "arithmetic-coded", 0xCE: "arithmetic-coded", 0xCF: "arithmetic-coded"}


class Refused(ValueError):
    """An image the model does not read; the message says why."""


def _png_size(data):
    """(width, height) from IHDR, after checking the chunks up to the first IDAT."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise Refused("truncated or malformed PNG (no IHDR header)")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if not (width and height) or depth not in PNG_BIT_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise Refused("malformed PNG header")
    offset = 33
    while True:
        if offset + 8 > len(data):
            raise Refused("truncated PNG (no image data)")
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            return width, height
        if kind == b"acTL":
            raise Refused("animated PNG: send one still image")
        offset += 12 + length


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
                raise Refused(f"JPEG with {components} colour components (CMYK?): send grayscale or RGB")
            if not (width and height):
                raise Refused("malformed JPEG frame header")
            return width, height
        offset += 1 + length


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
    """None if the model reads these image bytes, else the reason it does not (one line)."""
    if len(data) > MAX_IMAGE_BYTES:
        return f"larger than {MAX_IMAGE_BYTES} bytes: not a captcha image"
    try:
        _, width, height = header(data)
    except Refused as e:
        return str(e)
    sizes = accepted_sizes(spec)
    if (width, height) not in sizes:
        return f"image is {width}x{height}, the model reads {' or '.join(f'{w}x{h}' for w, h in sizes)}"
    return None
