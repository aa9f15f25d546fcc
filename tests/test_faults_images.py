"""Fault injection, hostile image bytes and paths against the one image policy (trainer/images.py): the work an
image costs is bounded by what its header declares, whatever its data inflates to; every path a user names is
read only if it is a regular file, and never past the image limit; the policy's reason is the one `predict`,
`serve` and the bytes signature give, and nothing but that one line is printed."""
import io
import os
import struct
import subprocess
import sys
import time
import zlib

import pytest
from PIL import Image

from beam_jobs.render import Renderer
from launch import endpoints
from tfrecord.spec import CaptchaSpec
from trainer import images

SPEC = CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24)  # tiny_model's spec
CAPTCHA = CaptchaSpec(alphabet="0123456789", length=4, width=120, height=100)  # the issue's 120x100 captcha
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width, height, stream, depth=8, colour=0, interlace=0, split=None):
    """A PNG with a genuine header around the zlib `stream` (in IDAT chunks of `split` bytes, if given)."""
    split = split or max(1, len(stream))
    idat = b"".join(chunk(b"IDAT", stream[i:i + split]) for i in range(0, len(stream), split))
    return (images.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
            + idat + chunk(b"IEND", b""))


def zeros_stream(inflated):
    """A zlib stream of `inflated` zero bytes (a whole number of MiB), about 1,000 times smaller: deflate blocks of
    1 MiB of zeros repeated (each refers back only to zeros). Its checksum is left wrong: nobody should get there."""
    deflate, piece = zlib.compressobj(9, zlib.DEFLATED, -15), 1 << 20
    first = deflate.compress(b"\0" * piece) + deflate.flush(zlib.Z_SYNC_FLUSH)
    repeat = deflate.compress(b"\0" * piece) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return b"\x78\xda" + first + repeat * (inflated // piece - 1) + deflate.flush() + b"\0\0\0\1"


def png_bomb(width, height, inflated=3900 << 20):
    """The issue's PNG: a genuine width x height grayscale header, under 4 MiB of data inflating to ~4 GB."""
    return png(width, height, zeros_stream(inflated))


def rows(width, height, extra=0):
    """A zlib stream of exactly the bytes a width x height 8-bit grayscale PNG's rows need, plus `extra`."""
    return zlib.compress(b"\0" * (height * (1 + width) + extra))


def encoded(image, fmt="PNG", **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def cpu_seconds(function, *args):
    """(result, CPU seconds this process spent in the call): user + system time of all its threads."""
    start = time.process_time()
    result = function(*args)
    return result, time.process_time() - start


def test_the_bomb_is_what_the_issue_describes():
    bomb = png_bomb(120, 100)
    assert len(bomb) < images.MAX_IMAGE_BYTES and images.header(bomb) == ("png", 120, 100)
    inflater, stream, inflated = zlib.decompressobj(), bomb[41:-16], 0  # IDAT's body
    while inflated < 256 << 20:  # the first 256 MiB of 3.8 GiB, which TensorFlow inflates whole (~8 s of CPU)
        inflated += len(inflater.decompress(stream, 16 << 20))
        stream = inflater.unconsumed_tail
    assert inflated == 256 << 20 and not inflater.eof


def bomb_reason(width, height):
    """The policy's reason for `png_bomb(width, height)` (8-bit grayscale rows)."""
    idat = len(zeros_stream(3900 << 20))
    limit = images.png_image_data_limit(height * (1 + width))
    return f"PNG image data is {idat} bytes: more than the rows of a {width}x{height} image take ({limit} at most)"


def test_png_inflation_is_bounded_by_the_header():
    """The policy's CPU time on a 4 MB PNG whose 120x100 rows inflate to ~4 GB is that of one 120x100 image:
    under 0.25 s of process CPU, where inflating it all costs several seconds. Its compressed data is longer than
    any encoder writes for 120x100 pixels; a shorter stream that still inflates to 16 MiB is inflated 12,101 bytes
    far and no further."""
    reason, seconds = cpu_seconds(images.refusal, png_bomb(120, 100), CAPTCHA)
    assert reason == bomb_reason(120, 100) and seconds < 0.25
    reason, seconds = cpu_seconds(images.refusal, png(120, 100, zeros_stream(16 << 20)), CAPTCHA)
    assert reason == "PNG image data inflates past the 12100 bytes its 120x100 header needs" and seconds < 0.25


def test_the_bytes_signature_bounds_png_inflation_too(tiny_model):
    """TF Serving runs the signature on what it is sent: the same bomb is refused in-graph with the policy's
    reason, within 1 s of process CPU (libpng inflating it costs ~8 s)."""
    import tensorflow as tf

    from trainer import export

    default = export.load(str(tiny_model))[0].signatures["serving_default"]
    default(image_bytes=tf.constant([png(40, 24, rows(40, 24))]))  # warm: traced and run once
    start = time.process_time()
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        default(image_bytes=tf.constant([png_bomb(40, 24)]))
    assert time.process_time() - start < 1
    assert bomb_reason(40, 24) in refused.value.message
    many = png(40, 24, rows(40, 24))[:33] + chunk(b"tEXt", b"k\0v") * images.MAX_PARTS + png(40, 24, rows(40, 24))[33:]
    with pytest.raises(tf.errors.InvalidArgumentError, match=images.TOO_MANY_CHUNKS):
        default(image_bytes=tf.constant([many]))
    assert images.refusal(many, SPEC) == images.TOO_MANY_CHUNKS


@pytest.mark.parametrize("data, reason", [
    (png(40, 24, rows(40, 24)), None),  # exactly what the rows need
    (encoded(Image.effect_noise((40, 24), 100), compress_level=0), None),  # stored: longer than the rows
    (encoded(Image.effect_noise((40, 24), 100), compress_level=9), None),  # noise does not compress
    (png(40, 24, rows(40, 24), split=7), None),  # in many IDAT chunks
    (png(40, 24, zlib.compress(b"\0" * 1005), interlace=1), None),  # Adam7: seven passes, 1,005 bytes of rows
    (png(40, 24, zlib.compress(b"\0" * 1006), interlace=1), "inflates past the 1005 bytes its 40x24 header needs"),
    (png(40, 24, rows(40, 24, extra=1)), "PNG image data inflates past the 984 bytes its 40x24 header needs"),
    (png(40, 24, rows(40, 24, extra=-1)), "truncated PNG image data"),
    (png(40, 24, rows(40, 24)[:-6]), "truncated PNG image data"),
    (png(40, 24, b"\x78\xda" + b"\xff" * 50), "corrupt PNG image data"),
    (png(40, 24, zeros_stream(1 << 20), split=256), "PNG image data inflates past the 984 bytes"),
    (png(40, 24, zeros_stream(4 << 20)),
     f"PNG image data is {len(zeros_stream(4 << 20))} bytes: more than the rows of a 40x24 image take (2992 at most)"),
    (png(40, 24, rows(40, 24))[:-12], "truncated PNG (no IEND chunk)"),
])
def test_png_image_data_must_inflate_to_what_the_rows_need(data, reason):
    import tensorflow as tf

    problem = images.refusal(data, SPEC)
    if reason is None:
        assert problem is None and tf.io.decode_png(data).shape == (24, 40, 1)  # libpng agrees
    else:
        assert reason in problem


def jpeg(mode="L", size=(40, 24), **options):
    out = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert(mode).save(out, "JPEG", **options)
    return out.getvalue()


def with_scans(data, scans):
    """A progressive JPEG with its last scan repeated until it has `scans` start-of-scan markers."""
    last = data.rindex(images.JPEG_SCAN)
    return data[:-2] + data[last:-2] * (scans - data.count(images.JPEG_SCAN)) + images.JPEG_END


PROGRESSIVE = jpeg(progressive=True)
HOSTILE_JPEGS = [
    ("scans.jpg", with_scans(PROGRESSIVE, images.MAX_JPEG_SCANS + 1), images.TOO_MANY_SCANS),
    ("cut.jpg", PROGRESSIVE[:len(PROGRESSIVE) * 2 // 3], images.JPEG_TRUNCATED),
    ("cmyk.jpg", jpeg("CMYK"), images.JPEG_COMPONENTS.format(4)),
]


def test_jpeg_scans_are_bounded():
    assert images.refusal(with_scans(PROGRESSIVE, images.MAX_JPEG_SCANS), SPEC) is None
    assert images.refusal(jpeg(progressive=True, size=(40, 24)), SPEC) is None
    bomb = with_scans(PROGRESSIVE, 50_000)  # ~4 MB of scans
    reason, seconds = cpu_seconds(images.refusal, bomb, SPEC)
    assert reason == images.TOO_MANY_SCANS and seconds < 0.25


@pytest.mark.parametrize("name, data, reason", HOSTILE_JPEGS, ids=[c[0] for c in HOSTILE_JPEGS])
def test_the_bytes_signature_gives_the_policys_reason(tiny_model, name, data, reason):
    """What TF Serving answers after `launch deploy` carries the reason `predict` and `serve` give, and no
    libjpeg words: the checks run in-graph before anything is decoded."""
    import tensorflow as tf

    from trainer import export

    assert images.refusal(data, SPEC) == reason
    default = export.load(str(tiny_model))[0].signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        default(image_bytes=tf.constant([data]))
    assert reason in refused.value.message and "Uncompress" not in refused.value.message


@pytest.mark.timeout(120, func_only=True)
def test_predict_prints_only_our_lines_for_broken_jpegs(tiny_model, tmp_path):
    """In a fresh process (TensorFlow's C++ log lines go to fd 2): one `error:` line per file, nothing else."""
    for name, data, _ in HOSTILE_JPEGS:
        (tmp_path / name).write_bytes(data)
    (tmp_path / "bomb.png").write_bytes(png_bomb(40, 24))
    proc = subprocess.run([sys.executable, "-m", "trainer.predict", "--model-dir", str(tiny_model), str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=100)
    assert proc.returncode == 1
    expected = {f"error: {tmp_path / name}: {reason}" for name, _, reason in HOSTILE_JPEGS}
    expected.add(f"error: {tmp_path / 'bomb.png'}: {bomb_reason(40, 24)}")
    assert set(proc.stderr.splitlines()) == expected
    assert proc.stdout.splitlines()[-1] == "predicted 0 file(s), 4 error(s)"


def test_serve_refuses_the_bomb_within_a_bounded_cpu_time(tiny_model):
    """The issue's case: each such request cost `serve` ~6.5 s of CPU. Eight of them now cost under 2 s in all."""
    from trainer import serve

    client = serve.create_app(str(tiny_model)).test_client()
    bomb = png_bomb(40, 24)
    client.post("/invocations", data=Renderer(SPEC).render("12", 0), content_type="image/png")  # warm
    start = time.process_time()
    for _ in range(8):
        r = client.post("/invocations", data=bomb, content_type="image/png")
        assert r.status_code == 400
        assert r.json == {"error": f"instance 0: {bomb_reason(40, 24)}"}
    assert time.process_time() - start < 2


def bytes_read():
    """Bytes this process has read through system calls so far (/proc/self/io's rchar)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_read_file_reads_regular_files_only_and_never_past_the_cap(tmp_path):
    good = Renderer(SPEC).render("12", 0)
    (tmp_path / "good.png").write_bytes(good)
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "folder.png").mkdir()
    with open(tmp_path / "sparse.png", "wb") as f:
        f.truncate(2 << 30)
    assert images.read_file(tmp_path / "good.png") == good
    for path, reason in [(tmp_path / "fifo.png", "is a FIFO, not a regular file"),
                         ("/dev/zero", "is a device, not a regular file"),
                         (tmp_path / "folder.png", "is a folder, not a regular file"),
                         (tmp_path / "gone.png", "No such file or directory"),
                         (tmp_path / "sparse.png", images.TOO_LARGE)]:
        before = bytes_read()
        with pytest.raises(images.Refused, match=f"^{reason}$"):
            images.read_file(path)
        assert bytes_read() - before < 1 << 20, path  # /dev/zero was read to 2 GB, the sparse file too


@pytest.mark.timeout(30, func_only=True)
@pytest.mark.parametrize("name", ["fifo.png", "/dev/zero", "folder.png", "sparse.png", "text.png"])
def test_launch_invoke_checks_every_image_before_sending(tmp_path, capsys, name):
    """`launch invoke x /dev/zero` read 2 GB and a FIFO blocked it forever: now one line, exit 2, nothing sent
    (the --url points at a closed port: a request would fail differently)."""
    (tmp_path / "good.png").write_bytes(Renderer(SPEC).render("12", 0))
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "text.png").write_text("hello")
    with open(tmp_path / "sparse.png", "wb") as f:
        f.truncate(2 << 30)
    path = name if name.startswith("/") else str(tmp_path / name)
    reasons = {"fifo.png": "is a FIFO, not a regular file", "/dev/zero": "is a device, not a regular file",
               "folder.png": "is a folder, not a regular file",
               "sparse.png": images.TOO_LARGE, "text.png": "not a PNG or JPEG image"}  # the first three: as flags word it
    assert endpoints.invoke(["x", str(tmp_path / "good.png"), path, "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"{path}: " in err and err.endswith(f"{reasons[name]}\n")


def transparent_captcha(spec, text):
    """(the captcha with its background transparent and black, its ink opaque; the same as a person sees it on
    a page, flattened onto white) as PNG bytes: RGBA and grayscale."""
    import numpy as np

    gray = np.asarray(Image.open(io.BytesIO(Renderer(spec).render(text, 3))).convert("L"))
    ink = gray < 200
    rgba = np.zeros((*gray.shape, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = np.where(ink, gray, 0)[..., None], np.where(ink, 255, 0)
    return encoded(Image.fromarray(rgba, "RGBA")), encoded(Image.fromarray(np.where(ink, gray, 255).astype(np.uint8)))


def pixels(data, spec):
    import tensorflow as tf

    from trainer import export

    return export.decode_images(tf.constant([data]), spec).numpy()[0]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_transparent_background_reads_as_white(mode):
    """The bytes signature (which predict and serve call too) composites onto white: a captcha saved with a
    transparent background gives exactly the pixels of the same captcha flattened onto white."""
    import numpy as np

    spec = CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24, mode=mode)
    see_through, flat = transparent_captcha(spec, "42")
    assert (pixels(see_through, spec) == pixels(flat, spec)).all()
    la = Image.merge("LA", [Image.open(io.BytesIO(flat)), Image.fromarray(
        (np.asarray(Image.open(io.BytesIO(flat))) > 128).astype(np.uint8) * 255)])  # ink opaque, light parts clear
    assert (pixels(encoded(la), spec) == pixels(flat, spec)).all()
    grey = np.asarray(Image.open(io.BytesIO(flat)))
    palette = Image.fromarray(grey, "P")  # index i is grey i, but 255: black, and transparent (a tRNS colour key)
    palette.putpalette([v for i in range(255) for v in (i, i, i)] + [0, 0, 0])
    assert (pixels(encoded(palette, transparency=255), spec) == pixels(flat, spec)).all()


def test_partial_alpha_is_composited_as_pil_does():
    """Every (grey, alpha) pair of an LA PNG against PIL's alpha_composite onto white, within 1 of 255."""
    import numpy as np

    spec = CaptchaSpec(alphabet="0123456789", length=2, width=256, height=256)
    grey, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    la = Image.fromarray(np.stack([grey, alpha], -1), "LA")
    white = Image.new("RGBA", la.size, (255, 255, 255, 255))
    reference = np.asarray(Image.alpha_composite(white, la.convert("RGBA")).convert("L"), np.int32)
    ours = pixels(encoded(la), spec)[..., 0].astype(np.int32)
    assert np.abs(ours - reference).max() <= 1
    assert (ours[alpha == 255] == grey[alpha == 255]).all() and (ours[alpha == 0] == 255).all()


def test_predict_and_serve_read_the_transparent_captcha_as_the_flat_one(tiny_model, tmp_path, capsys):
    from trainer import predict, serve

    see_through, flat = transparent_captcha(SPEC, "42")
    (tmp_path / "see_through.png").write_bytes(see_through)
    (tmp_path / "flat.png").write_bytes(flat)
    assert predict.main(["--model-dir", str(tiny_model), str(tmp_path / "see_through.png"), str(tmp_path / "flat.png")]) == 0
    lines = [line.split("\t")[1:] for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(lines) == 2 and lines[0] == lines[1]
    client = serve.create_app(str(tiny_model)).test_client()
    answers = [client.post("/invocations", data=data, content_type="image/png").json for data in (see_through, flat)]
    assert answers[0] == answers[1] and "predictions" in answers[0]


def padded_scan(data):
    """A JPEG cut inside its scan and given back its end marker: libjpeg warns and pads with grey."""
    return data[:len(data) // 2] + images.JPEG_END


@pytest.mark.timeout(120, func_only=True)
def test_a_jpeg_libjpeg_calls_corrupt_is_refused_with_its_words_and_nothing_else_printed(tiny_model, tmp_path):
    """libjpeg prints "Corrupt JPEG data: ..." on file descriptor 2 and decodes on; predict (a fresh process,
    in batches with good images) and serve give that as the one reason, and print nothing else."""
    corrupt = padded_scan(encoded(Image.effect_noise((40, 24), 60), "JPEG"))
    assert images.refusal(corrupt, SPEC) is None  # nothing the policy can see without decoding
    (tmp_path / "corrupt.jpg").write_bytes(corrupt)
    (tmp_path / "good.jpg").write_bytes(jpeg())
    (tmp_path / "good.png").write_bytes(Renderer(SPEC).render("12", 0))
    proc = subprocess.run([sys.executable, "-m", "trainer.predict", "--model-dir", str(tiny_model), str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=100)
    reason = "could not decode: Corrupt JPEG data: premature end of data segment"
    assert proc.returncode == 1 and proc.stderr == f"error: {tmp_path / 'corrupt.jpg'}: {reason}\n"
    assert proc.stdout.splitlines()[-1] == "predicted 2 file(s), 1 error(s)"
    from trainer import serve

    r = serve.create_app(str(tiny_model)).test_client().post("/invocations", data=corrupt, content_type="image/jpeg")
    assert r.status_code == 400 and r.json == {"error": f"instance 0: {reason}"}


def test_decoder_lines_are_sorted_while_captured(capfd):
    """What reaches file descriptor 2 during a JPEG batch: libjpeg's corrupt-data lines become the reason, its
    metadata notes and TensorFlow's jpeg_mem lines are dropped, anything else is passed on, nothing is lost."""
    from trainer import export

    def call():
        for line in ("Corrupt JPEG data: 3 extraneous bytes before marker 0xd9", "Warning: unknown JFIF revision number 1.03",
                     "E0000 00:00:1796000572.599657   15440 jpeg_mem.cc:331] Premature end of JPEG data.",
                     "a line of someone else's"):
            os.write(2, (line + "\n").encode())
        return 42

    assert export._with_decoder_warnings(call) == (42, ["Corrupt JPEG data: 3 extraneous bytes before marker 0xd9"])
    assert capfd.readouterr().err == "a line of someone else's\n"
