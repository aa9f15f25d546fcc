"""The tf.train.Example schema (TF Object Detection style keys): one encoder, one parser.

The encoder writes the protobuf wire format by hand: no TensorFlow on the producer side, and
byte-identical output for identical input (features in sorted key order).

`image/encoded` holds the image at the spec's STORED size: PNG bytes (`image/format` "png"), or for
"raw" the uint8 pixels, stored height x stored width x channels in row-major order (exactly
H*W*C bytes). `image/width`/`image/height` are the stored size.
"""
from tfrecord.spec import CaptchaSpec

IMAGE = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
TEXT = "image/class/text"
LABEL = "image/class/label"


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value):
    return _field(1, _field(1, value))  # Feature.bytes_list { value }


def _int64_feature(values):
    return _field(3, _field(1, b"".join(_varint(v) for v in values)))  # Feature.int64_list, packed


def encode_example(image, text, spec: CaptchaSpec):
    """Encoded image (PNG bytes or raw pixels at the stored size) + label text -> serialized tf.train.Example."""
    features = {
        IMAGE: _bytes_feature(image),
        FORMAT: _bytes_feature(spec.image_format.encode()),
        HEIGHT: _int64_feature([spec.store_height]),
        WIDTH: _int64_feature([spec.store_width]),
        TEXT: _bytes_feature(text.encode()),
        LABEL: _int64_feature(spec.encode_label(text)),
    }
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in sorted(features.items()))
    return _field(1, entries)  # Example.features { feature map }


def feature_spec(spec: CaptchaSpec):
    import tensorflow as tf

    return {
        IMAGE: tf.io.FixedLenFeature([], tf.string),
        FORMAT: tf.io.FixedLenFeature([], tf.string),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        TEXT: tf.io.FixedLenFeature([], tf.string),
        LABEL: tf.io.FixedLenFeature([spec.length], tf.int64),
    }


def parse_example(serialized, spec: CaptchaSpec):
    """Serialized Example(s), scalar or batch -> dict of tensors keyed as above."""
    import tensorflow as tf

    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec(spec))
    return tf.io.parse_example(serialized, feature_spec(spec))


def decode_raw(encoded, spec: CaptchaSpec):
    """Raw `image/encoded` bytes, scalar or [B] -> uint8 pixels [H, W, C] or [B, H, W, C] (one op per batch).

    A record of the wrong byte length fails (InvalidArgument) rather than being reshaped silently."""
    import tensorflow as tf

    pixels = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), tf.concat([tf.shape(encoded), spec.input_shape], 0))
    return tf.ensure_shape(pixels, [*encoded.shape, *spec.input_shape])
