"""Export: a TF Serving SavedModel at `<model_dir>/1/` plus `<model_dir>/model.keras`.

Signatures (both return `text` string[B], `probabilities` float32[B, positions, classes], `confidence` float32[B];
positions x classes is the head's (`trainer.model`): per position, or per CTC time step with the blank last;
`text` is what `trainer.model.decode` reads, of any length the spec allows, `confidence` its probability):
  serving_default  image_bytes: string[B]  PNG or JPEG (TF Serving REST {"instances": [{"b64": ...}]}) at the
                   RENDER size (box-downscaled here as the producer does) or at the STORED size (used as is);
                   a PNG with transparency composited onto white. Any other size or format, a CMYK JPEG, a
                   JPEG with too many scans or no end marker, a PNG with too many chunks or more image data
                   than its rows could take, a file over `trainer.images.MAX_IMAGE_BYTES` fails with
                   InvalidArgument naming `trainer.images`' reason before any pixel is decoded, so what
                   libpng may inflate is bounded by the header (`predict` and `serve` also inflate it
                   themselves, bounded, in `trainer.images.refusal`, before calling it)
  serving_pixels   pixels: uint8[B, H, W, C] at the stored size (`spec.input_shape`)
The spec, with both sizes, travels as `1/assets.extra/captcha_spec.json`.
"""
import json
import os
import re
import sys
import tempfile
import threading

import keras
import numpy as np
import tensorflow as tf

from tfrecord import localfs
from tfrecord.errors import UserError
from tfrecord.spec import SPEC_FILE, CaptchaSpec
from trainer import images
from trainer.model import decode, head_of

VERSION = "1"
SPEC_ASSET = os.path.join("assets.extra", SPEC_FILE)


def _occurrences(data, marker):
    """How often the byte string `marker` occurs in the scalar string `data`."""
    return tf.size(tf.strings.split(data, sep=tf.constant(marker))) - 1


def _header_size(data):
    """(is_png, height, width) from a PNG's IHDR or a JPEG's frame header, without decoding any pixels, after the
    checks of `trainer.images` that need no decoding: length, format, a JPEG's colour components."""
    too_long = tf.debugging.Assert(tf.strings.length(data) <= images.MAX_IMAGE_BYTES, [images.TOO_LARGE])
    is_png = tf.strings.substr(data, 0, 8) == images.PNG_SIGNATURE

    def png():
        with tf.control_dependencies([tf.debugging.assert_greater_equal(
                tf.strings.length(data), 24, "truncated PNG (no IHDR header)")]):
            width_height = tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.int32, little_endian=False)
        return width_height[1], width_height[0]

    def jpeg():
        with tf.control_dependencies([tf.debugging.Assert(tf.io.is_jpeg(data), ["not a PNG or JPEG image"])]):
            shape = tf.io.extract_jpeg_shape(data)
        components = shape[2]
        with tf.control_dependencies([tf.debugging.Assert((components == 1) | (components == 3), [
                tf.strings.format(images.JPEG_COMPONENTS, components)])]):
            return tf.identity(shape[0]), tf.identity(shape[1])

    with tf.control_dependencies([too_long]):
        return (is_png, *tf.cond(is_png, png, jpeg))


def _jpeg_checks(data):
    """`trainer.images`' JPEG rules that need no decoding, as assertions: the scan count and an end marker
    (here: one somewhere in the file; `trainer.images` also checks that it ends the last scan)."""
    return [tf.debugging.Assert(_occurrences(data, images.JPEG_SCAN) <= images.MAX_JPEG_SCANS, [images.TOO_MANY_SCANS]),
            tf.debugging.Assert(_occurrences(data, images.JPEG_END) > 0, [images.JPEG_TRUNCATED]),
            tf.debugging.Assert(tf.add_n([_occurrences(data, entry) for entry in images.JPEG_ORIENTATIONS]) == 0,
                                [images.JPEG_ORIENTED])]


def _big_endian(data, offset, size):
    """The unsigned big-endian integer in bytes [offset, offset + size) of the scalar string `data`, as int64."""
    digits = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, size), tf.uint8), tf.int64)
    return tf.reduce_sum(digits * tf.constant([256 ** i for i in reversed(range(size))], tf.int64))


def _png_image_data_checks(data):
    """`trainer.images`' bounds on a PNG's chunks (`MAX_PARTS`) and compressed image data (`png_image_data_limit`),
    as assertions: the chunks walked and their IDAT lengths summed, before libpng inflates any of it."""
    width, height = _big_endian(data, 16, 4), _big_endian(data, 20, 4)
    depth, colour, interlace = (_big_endian(data, offset, 1) for offset in (24, 25, 28))
    bits = depth * tf.gather(tf.constant([images.PNG_CHANNELS.get(c, 0) for c in range(7)], tf.int64),
                             tf.minimum(colour, 6))
    needed = tf.where(interlace == 1, images.png_image_data_bytes(width, height, bits, True),
                      images.png_image_data_bytes(width, height, bits, False))
    end = tf.cast(tf.strings.length(data), tf.int64)

    def step(offset, total, chunks):
        length = _big_endian(data, offset, 4)
        is_data = tf.strings.substr(data, offset + 4, 4) == b"IDAT"
        return offset + 12 + length, total + tf.where(is_data, length, tf.constant(0, tf.int64)), chunks + 1

    def more(offset, *_):
        return (offset + 8 <= end) & (tf.strings.substr(data, tf.minimum(offset + 4, end), 4) != b"IEND")

    zero = tf.constant(0, tf.int64)
    _, compressed, chunks = tf.while_loop(more, step, (tf.constant(33, tf.int64), zero, zero),
                                          maximum_iterations=images.MAX_PARTS + 1)
    limit = images.png_image_data_limit(needed)
    return [tf.debugging.Assert(chunks <= images.MAX_PARTS, [images.TOO_MANY_CHUNKS]),
            tf.debugging.Assert(compressed <= limit, [tf.strings.format(
                images.PNG_DATA_TOO_LONG, (compressed, width, height, limit))])]


def png_on_white(data, channels):
    """A PNG's pixels, uint8 [H, W, channels], composited onto white by its alpha (an alpha channel or a tRNS
    colour key): `round(colour * a + 255 * (1 - a))` with a in [0, 1], exact in integers; an opaque PNG's pixels
    are those of `tf.io.decode_png(data, channels)` unchanged. A captcha saved with a transparent background
    reads as it looks on a page, ink on white, not on the black its transparent pixels often hold."""
    colour = tf.io.decode_png(data, channels=channels)

    def composite():
        alpha = tf.cast(tf.io.decode_png(data, channels=4)[..., 3:], tf.int32)
        return tf.cast((tf.cast(colour, tf.int32) * alpha + 255 * (255 - alpha) + 127) // 255, tf.uint8)

    colour_type = tf.io.decode_raw(tf.strings.substr(data, 25, 1), tf.uint8)[0]
    has_alpha = (colour_type == 4) | (colour_type == 6) | (_occurrences(data, b"tRNS") > 0)
    return tf.cond(has_alpha, composite, lambda: colour)


def box_downscale(image, size):
    """The producer's `PIL.Image.resize(size, Image.BOX)` in TensorFlow: an area average, horizontal pass then
    vertical, each rounded half up to uint8 as PIL does: bit-identical at the whole factors the spec allows."""
    def area(x, height, width):
        return tf.floor(tf.image.resize(x, (height, width), method="area") + 0.5)

    return tf.cast(area(area(image, tf.shape(image)[0], size[1]), *size), tf.uint8)


def decode_images(image_bytes, spec: CaptchaSpec):
    """PNG/JPEG bytes [B] -> uint8 pixels [B, *spec.input_shape], by the image policy (see the module doc): a PNG
    with transparency composited onto white (`png_on_white`); an image outside the policy fails with
    InvalidArgument carrying `trainer.images`' reason, before any pixel is decoded where it can be known."""
    stored, render = spec.input_shape[:2], (spec.height, spec.width)
    sizes = " or ".join(f"{w}x{h}" for w, h in images.accepted_sizes(spec))  # as predict and serve word it

    def decode(data):
        is_png, height, width = _header_size(data)
        is_stored = (height == stored[0]) & (width == stored[1])
        is_render = (height == render[0]) & (width == render[1])
        size_ok = tf.debugging.Assert(is_stored | is_render, [
            tf.strings.format("image is {}x{}, the model reads ", (width, height)) + sizes])

        def jpeg():
            with tf.control_dependencies(_jpeg_checks(data)):
                return tf.io.decode_jpeg(data, channels=spec.channels)

        def png():
            with tf.control_dependencies(_png_image_data_checks(data)):
                return png_on_white(data, spec.channels)

        with tf.control_dependencies([size_ok]):  # nothing is decoded before the size is known to be right
            image = tf.cond(is_png, png, jpeg)
        if stored != render:
            image = tf.cond(is_stored, lambda: image, lambda: box_downscale(image, stored))
        return tf.ensure_shape(image, spec.input_shape)

    return tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec(spec.input_shape, tf.uint8))


def predict_each(signature, image_bytes):
    """Run the bytes signature on images the policy accepted: per image, (text, confidence, probabilities) or
    the reason it could not be decoded. One call for a clean batch; a batch that fails is retried image by
    image to find the culprits. libjpeg prints its warnings about corrupt data (a scan cut short and padded,
    say) straight to file descriptor 2 and decodes on; a batch with JPEGs is run with those lines captured,
    and an image that caused one is refused with it as the reason instead of being printed beside ours."""
    try:
        if any(image.startswith(images.JPEG_SIGNATURE) for image in image_bytes):
            out, warnings = _with_decoder_warnings(lambda: signature(image_bytes=tf.constant(image_bytes)))
        else:
            out, warnings = signature(image_bytes=tf.constant(image_bytes)), []
    except tf.errors.InvalidArgumentError as e:
        if len(image_bytes) == 1:
            return ["could not decode: " + re.sub(r"\{\{.*?\}\}\s*", "", e.message).splitlines()[0]]
        return [result for one in image_bytes for result in predict_each(signature, [one])]
    if warnings and len(image_bytes) > 1:
        return [result for one in image_bytes for result in predict_each(signature, [one])]
    return [f"could not decode: {warnings[0]}"] if warnings else _results(out)


# libjpeg's warnings (jerror.h): data it calls corrupt, which it decodes on, padding with grey; notes on metadata;
# and TensorFlow's own log lines about a JPEG it refuses (the InvalidArgument error says it again)
LIBJPEG_CORRUPT = re.compile(r"Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression sequence|"
                             r"Invalid SOS parameters")
DECODER_NOTES = re.compile(r"Warning: |[IWE]\d{4} [^\]]* jpeg_mem\.cc:\d+\] ")
_FD2 = threading.Lock()  # one capture of file descriptor 2 at a time in this process


def _with_decoder_warnings(call):
    """(call(), libjpeg's lines about corrupt data) with file descriptor 2 captured during the call. Its notes
    about metadata and TensorFlow's JPEG log lines are dropped; any other line written there meanwhile (by
    another thread, say) is passed on to it afterwards."""
    with _FD2, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        real = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            return call(), [line for line in _lines(captured) if LIBJPEG_CORRUPT.match(line)]
        finally:
            os.dup2(real, 2)
            os.close(real)
            others = [line for line in _lines(captured)
                      if not (LIBJPEG_CORRUPT.match(line) or DECODER_NOTES.match(line))]
            if others:
                print("\n".join(others), file=sys.stderr, flush=True)


def _lines(captured):
    captured.seek(0)
    return captured.read().decode(errors="replace").splitlines()


def predict_pixels(signature, pixels):
    """Run the pixels signature on uint8 arrays [H, W, C] at the stored size: per image, (text, confidence,
    probabilities)."""
    return _results(signature(pixels=tf.constant(np.stack(pixels), tf.uint8)))


def _results(out):
    return list(zip([t.decode() for t in out["text"].numpy()], out["confidence"].numpy().tolist(),
                    out["probabilities"].numpy().tolist()))


def export(model, spec: CaptchaSpec, model_dir):
    """Write the SavedModel, the .keras file and, last and atomically, the spec: a model dir holding a spec
    holds a complete export, and one cut short is refused by `load` in one line. Returns the SavedModel path."""
    path = os.path.join(model_dir, VERSION)
    if os.path.exists(os.path.join(path, SPEC_ASSET)):
        os.remove(os.path.join(path, SPEC_ASSET))  # an export over an older one is incomplete until it ends
    os.makedirs(model_dir, exist_ok=True)
    head, pad = head_of(model)
    alphabet = tf.constant([*spec.alphabet, ""])  # index num_classes (the "end" class, the CTC blank) reads as ""

    def outputs(pixels):
        probabilities = tf.cast(model(pixels, training=False), tf.float32)
        indices, confidence = decode(probabilities, head, pad)
        text = tf.strings.reduce_join(tf.gather(alphabet, indices), axis=-1)
        return {"text": text, "probabilities": probabilities, "confidence": confidence}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda image_bytes: outputs(decode_images(image_bytes, spec)),
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_pixels", outputs,
                         input_signature=[tf.TensorSpec([None, *spec.input_shape], tf.uint8, name="pixels")])
    try:
        archive.write_out(path, verbose=False)
        model.save(os.path.join(model_dir, "model.keras"))
    except (OSError, tf.errors.OpError) as e:  # TensorFlow's writers report a full disk in their own words
        if getattr(e, "errno", None) in localfs.FULL or "No space left on device" in str(e):
            raise localfs.NoSpace(f"{model_dir}: no space left on device (the export is incomplete and has no spec)") from None
        raise
    localfs.write_atomic(os.path.join(path, SPEC_ASSET), json.dumps(spec.to_dict(), indent=2))
    return path


def saved_model_path(model_dir):
    """Accept the model dir or its `1/` folder."""
    return model_dir if os.path.exists(os.path.join(model_dir, "saved_model.pb")) else os.path.join(model_dir, VERSION)


def load_spec(model_dir):
    path = os.path.join(saved_model_path(model_dir), SPEC_ASSET)
    try:
        with open(path) as f:
            return CaptchaSpec.from_dict(json.load(f))
    except FileNotFoundError:
        raise UserError(f"{model_dir}: not an exported captcha model (no {SPEC_ASSET})") from None
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, or not a spec's fields
        raise UserError(f"{path}: not a captcha spec ({type(e).__name__}: {e})") from None


def load(model_dir):
    """(SavedModel object, spec) from an exported model dir; a broken one is a UserError."""
    spec = load_spec(model_dir)
    path = saved_model_path(model_dir)
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise UserError(f"{model_dir}: no saved_model.pb beside {SPEC_ASSET} (an incomplete export?)")
    try:
        return tf.saved_model.load(path), spec
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError(f"{model_dir}: cannot load the SavedModel ({type(e).__name__}: {str(e).splitlines()[0]})") from None
