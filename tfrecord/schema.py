"""The tf.train.Example schema (TF Object Detection style keys): one encoder, one decoder, one parser.

The encoder and the decoder handle the protobuf wire format by hand: no TensorFlow on the producer
side (or in `inspect` and the tests), and byte-identical output for identical input (features in
sorted key order). The parser is TensorFlow's, for the readers.

`image/class/label` holds the label's own alphabet indices (as many as its characters, so a variable-length
spec's labels differ in length); the readers pad them to `spec.length` with `spec.pad` (`padded_labels`).
`image/encoded` holds the image at the spec's STORED size: PNG bytes (`image/format` "png"), or for
"raw" the uint8 pixels, stored height x stored width x channels in row-major order (exactly
H*W*C bytes). `image/width`/`image/height` are the stored size.
"""
import struct

from tfrecord.content import PNG_SIGNATURE
from tfrecord.errors import RecordError, SpecError
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


def _read_varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data, nested=False):
    """(field number, wire type, value) of one message: an int for varints, bytes otherwise; with `nested`,
    only the length-delimited fields (submessages, strings, packed lists)."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        else:
            if wire == 2:
                size, pos = _read_varint(data, pos)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos:pos + size], pos + size
        if wire == 2 or not nested:
            yield number, wire, value


def _int64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(feature):
    """Feature { bytes_list = 1 | float_list = 2 | int64_list = 3 } -> list of bytes, floats or ints."""
    values = []
    for kind, _, value_list in _fields(feature, nested=True):
        for number, wire, value in _fields(value_list):
            if number != 1:
                continue
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(value) // 4}f", value))
            elif kind == 3:
                values.extend(_int64(v) for v in ([value] if wire == 0 else _packed_varints(value)))
    return values


def _packed_varints(data):
    pos, out = 0, []
    while pos < len(data):
        value, pos = _read_varint(data, pos)
        out.append(value)
    return out


def decode_example(serialized):
    """Serialized tf.train.Example -> {feature key: list of values (bytes, float or int)}; ValueError if malformed."""
    features = {}
    for number, _, entries in _fields(serialized, nested=True):  # Example.features = 1
        for entry_number, _, entry in (_fields(entries, nested=True) if number == 1 else ()):  # Features.feature = 1
            if entry_number == 1:
                parts = {n: v for n, _, v in _fields(entry, nested=True)}  # map entry: key = 1, value = 2
                features[bytes(parts.get(1, b"")).decode()] = _feature_values(parts.get(2, b""))
    return features


PNG_COLOR_TYPES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}  # IHDR colour type -> PIL mode


def check_example(serialized, spec: CaptchaSpec, where):
    """A serialized Example against the spec, without decoding its image -> (label text, {feature: values}).

    Checks that the label text is `spec.min_length` to `spec.length` characters of `spec.alphabet` and that its indices spell it
    in that alphabet (a shortened or permuted alphabet fails here), that the declared format and size are
    the spec's stored ones, and that the image has that size: exactly H*W*C bytes for raw, the PNG
    header's width and height for PNG. Raises RecordError naming `where` (e.g. "<shard> record 3").
    """
    try:
        feature = decode_example(serialized)
        text = feature[TEXT][0].decode()
        label, data = feature[LABEL], feature[IMAGE][0]
        fmt, size = feature[FORMAT][0].decode(), (feature[WIDTH][0], feature[HEIGHT][0])
    except (ValueError, KeyError, IndexError) as e:  # not an Example of this schema
        raise RecordError(f"{where}: cannot decode example ({type(e).__name__}: {e})") from None
    try:
        expected = spec.encode_label(text)
    except SpecError as e:
        raise RecordError(f"{where}: {e}") from None
    if label != expected:
        raise RecordError(f"{where}: label indices {label} do not spell {text!r} in the alphabet {spec.alphabet!r}")
    stored = f"{spec.store_width}x{spec.store_height}"
    if fmt != spec.image_format or size != spec.store_size:
        raise RecordError(f"{where}: declared {fmt} {size[0]}x{size[1]}, spec says {spec.image_format} {stored}")
    if fmt == "raw" and len(data) != spec.store_width * spec.store_height * spec.channels:
        raise RecordError(f"{where}: raw image has {len(data)} bytes, spec says {stored}x{spec.channels} = "
                          f"{spec.store_width * spec.store_height * spec.channels}")
    if fmt == "png":
        if not (data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 26):
            raise RecordError(f"{where}: image/encoded is not a PNG")
        width, height = struct.unpack(">II", data[16:24])
        if (width, height) != spec.store_size:
            mode = PNG_COLOR_TYPES.get(data[25], f"colour type {data[25]}")
            raise RecordError(f"{where}: image is {mode} {width}x{height}, spec says {spec.mode} {stored}")
    return text, feature


def feature_spec(spec: CaptchaSpec):
    import tensorflow as tf

    return {
        IMAGE: tf.io.FixedLenFeature([], tf.string),
        FORMAT: tf.io.FixedLenFeature([], tf.string),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        TEXT: tf.io.FixedLenFeature([], tf.string),
        # a fixed length stays a FixedLenFeature: a label of another length fails to parse
        LABEL: tf.io.RaggedFeature(tf.int64) if spec.variable else tf.io.FixedLenFeature([spec.length], tf.int64),
    }


def parse_example(serialized, spec: CaptchaSpec):
    """Serialized Example(s), scalar or batch -> dict of tensors keyed as above."""
    import tensorflow as tf

    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec(spec))
    return tf.io.parse_example(serialized, feature_spec(spec))


def padded_labels(label, spec: CaptchaSpec):
    """A parsed batch's `image/class/label` ([B, length] int64, or ragged for a variable-length spec) ->
    (int32 labels [B, spec.length], each padded past its own length with `spec.pad`; int32 lengths [B])."""
    import tensorflow as tf

    if isinstance(label, tf.RaggedTensor):
        lengths = tf.cast(label.row_lengths(), tf.int32)
        label = label.to_tensor(default_value=spec.pad, shape=[None, spec.length])
    else:
        lengths = tf.fill(tf.shape(label)[:1], spec.length)
    return tf.cast(label, tf.int32), lengths


def decode_raw(encoded, spec: CaptchaSpec):
    """Raw `image/encoded` bytes, scalar or [B] -> uint8 pixels [H, W, C] or [B, H, W, C] (one op per batch).

    A record of the wrong byte length fails (InvalidArgument) rather than being reshaped silently."""
    import tensorflow as tf

    pixels = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), tf.concat([tf.shape(encoded), spec.input_shape], 0))
    return tf.ensure_shape(pixels, [*encoded.shape, *spec.input_shape])
