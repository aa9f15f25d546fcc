"""The one image policy (trainer/images.py): headers read without decoding, and the same cases through
`predict` (one line per refused file), `serve` (a JSON 400 naming the instance) and the SavedModel's bytes
signature (InvalidArgument, as TF Serving answers)."""
import io
import struct

import pytest
from PIL import Image

from tfrecord.spec import CaptchaSpec
from trainer import images

SPEC = CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24)  # tiny_dataset's spec


def encode(fmt, mode="L", size=(40, 24), **options):
    out = io.BytesIO()
    frames = options.pop("frames", 1)
    image = Image.linear_gradient("L").resize(size).convert(mode)
    extra = [image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)] * (frames - 1)
    image.save(out, fmt, save_all=frames > 1, append_images=extra, **options)
    return out.getvalue()


def png_claiming(width, height):
    """A 40x24 PNG whose header is made to claim width x height."""
    return GOOD_PNG[:16] + struct.pack(">II", width, height) + GOOD_PNG[24:]


def jpeg_with_frame(marker, precision=8, size=(40, 24), components=1):
    """A JPEG whose first segment after SOI is an APP0 and then a frame header SOFn as given."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    body = struct.pack(">BHHB", precision, size[1], size[0], components) + b"\x01\x11\x00" * components
    return b"\xff\xd8" + app0 + bytes([0xFF, marker]) + struct.pack(">H", 2 + len(body)) + body + b"\xff\xd9"


def padded_png(total):
    """A valid 40x24 PNG grown to `total` bytes by an ancillary chunk before IEND."""
    png = encode("PNG")
    pad = total - len(png) - 12
    return png[:-12] + struct.pack(">I", pad) + b"zPAD" + b"\0" * pad + struct.pack(">I", 0) + png[-12:]


GOOD_PNG = encode("PNG")
GOOD_JPEG = encode("JPEG", "RGB")
# (name, bytes, None if the model reads it else the reason's tell-tale words)
CASES = [
    ("gray.png", GOOD_PNG, None),
    ("rgb.png", encode("PNG", "RGB"), None),
    ("rgba.png", encode("PNG", "RGBA"), None),
    ("la.png", encode("PNG", "LA"), None),
    ("palette.png", encode("PNG", "P"), None),
    ("16bit.png", encode("PNG", "I;16"), None),
    ("rgb.jpg", GOOD_JPEG, None),
    ("gray.jpg", encode("JPEG"), None),
    ("progressive.jpg", encode("JPEG", "RGB", progressive=True), None),
    ("gif.png", encode("GIF"), "not a PNG or JPEG image"),
    ("bmp.png", encode("BMP"), "not a PNG or JPEG image"),
    ("webp.png", encode("WEBP"), "not a PNG or JPEG image"),
    ("tiff.png", encode("TIFF"), "not a PNG or JPEG image"),
    ("ico.png", encode("ICO", size=(32, 32)), "not a PNG or JPEG image"),
    ("empty.png", b"", "empty"),
    ("animated.png", encode("PNG", frames=2, duration=100), "animated PNG"),
    ("cmyk.jpg", encode("JPEG", "CMYK"), "JPEG with 4 colour components"),
    ("12bit.jpg", jpeg_with_frame(0xC1, precision=12), "12-bit JPEG"),
    ("lossless.jpg", jpeg_with_frame(0xC3), "lossless JPEG"),
    ("arithmetic.jpg", jpeg_with_frame(0xC9), "arithmetic-coded JPEG"),
    ("wide.png", encode("PNG", size=(60, 24)), "image is 60x24, the model reads 40x24"),
    ("small.jpg", encode("JPEG", size=(20, 12)), "image is 20x12, the model reads 40x24"),
    ("bomb.png", png_claiming(20000, 20000), "image is 20000x20000"),
    ("bomb.jpg", jpeg_with_frame(0xC0, size=(65000, 65000)), "image is 65000x65000"),
    ("headless.png", GOOD_PNG[:20], "truncated or malformed PNG"),
    ("no-idat.png", GOOD_PNG[:33], "truncated PNG (no image data)"),
    ("no-frame.jpg", GOOD_JPEG[:4], "truncated"),
    ("cut.png", GOOD_PNG[:len(GOOD_PNG) - 20], "truncated PNG"),
    ("cut.jpg", GOOD_JPEG[:len(GOOD_JPEG) // 2], "truncated JPEG"),
    ("huge.png", padded_png(images.MAX_IMAGE_BYTES + 1), f"larger than {images.MAX_IMAGE_BYTES} bytes"),
]
HEADER_REFUSALS = [(name, data, reason) for name, data, reason in CASES if reason and "decode" not in reason]


def test_headers_are_read_without_decoding():
    assert images.header(GOOD_PNG) == ("png", 40, 24)
    assert images.header(GOOD_JPEG) == ("jpeg", 40, 24)
    assert images.header(encode("JPEG", "RGB", size=(123, 45), progressive=True)) == ("jpeg", 123, 45)
    assert images.header(png_claiming(20000, 20000)) == ("png", 20000, 20000)


@pytest.mark.parametrize("name, data, reason", HEADER_REFUSALS, ids=[c[0] for c in HEADER_REFUSALS])
def test_refusals_from_the_header(name, data, reason):
    assert reason in images.refusal(data, SPEC)


def test_render_and_stored_size_are_both_accepted():
    spec = CaptchaSpec(alphabet="01", length=2, width=80, height=48, store_width=40, store_height=24)
    assert images.accepted_sizes(spec) == [(80, 48), (40, 24)]
    assert images.refusal(encode("PNG", size=(80, 48)), spec) is None
    assert images.refusal(GOOD_PNG, spec) is None
    assert images.refusal(encode("PNG", size=(40, 48)), spec) == "image is 40x48, the model reads 80x48 or 40x24"


def test_predict_applies_the_policy(tiny_model, tmp_path, capsys):
    from trainer import predict

    for name, data, _ in CASES:
        (tmp_path / name).write_bytes(data)
    assert predict.main(["--model-dir", str(tiny_model), "--batch-size", "4", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    predicted = {line.split("\t")[0] for line in out.splitlines() if "\t" in line}
    errors = dict(line.removeprefix("error: ").split(": ", 1) for line in err.splitlines() if line.startswith("error: "))
    for name, _, reason in CASES:
        path = str(tmp_path / name)
        if reason is None:
            assert path in predicted and path not in errors, name
        else:
            assert path not in predicted and reason in errors[path], name
    refused = sum(reason is not None for _, _, reason in CASES)
    assert f"predicted {len(CASES) - refused} file(s), {refused} error(s)" in out


def test_serve_applies_the_policy(tiny_model):
    from trainer import serve

    client = serve.create_app(str(tiny_model)).test_client()
    for name, data, reason in CASES:
        r = client.post("/invocations", data=data, content_type="image/jpeg" if name.endswith(".jpg") else "image/png")
        if reason is None:
            assert r.status_code == 200 and len(r.json["predictions"]) == 1, name
        else:
            assert r.status_code == 400 and r.json["error"].startswith("instance 0: ") and reason in r.json["error"], name


def test_bytes_signature_follows_the_shared_image_policy(tiny_model):
    """What trainer.images accepts, the signature reads; what it refuses for its size or format, the signature
    refuses too (so a TF Serving endpoint answers as `serve` and `predict` do)."""
    import tensorflow as tf

    from trainer import export

    default = export.load(str(tiny_model))[0].signatures["serving_default"]
    for name, data, reason in CASES:
        if reason is None:
            assert default(image_bytes=tf.constant([data]))["text"].shape == (1,), name
        elif reason.startswith("image is") or reason in ("not a PNG or JPEG image", "empty"):
            with pytest.raises(tf.errors.InvalidArgumentError) as refused:
                default(image_bytes=tf.constant([data]))
            # bomb.jpg is a bare frame header that TensorFlow's JPEG header reader refuses on its own terms
            told = "Invalid JPEG data" if name == "bomb.jpg" else reason.replace("empty", "not a PNG or JPEG image")
            assert told in refused.value.message, name
