"""Fault injection, hostile image files for `predict`: each bad file gets its own `error:` line, every good
one is still predicted, the exit status is 1, and nothing blocks or reads without bound."""
import contextlib
import io
import os

import pytest
from PIL import Image

from beam_jobs.render import Renderer
from tfrecord.spec import CaptchaSpec
from trainer import images

SPEC = CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24)  # tiny_dataset's spec


def as_format(fmt):
    out = io.BytesIO()
    Image.new("L", SPEC.render_size, 200).save(out, fmt)
    return out.getvalue()


def run_predict(model_dir, *paths, batch_size=64):
    from trainer import predict

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = predict.main(["--model-dir", str(model_dir), "--batch-size", str(batch_size), *map(str, paths)])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def good():
    renderer = Renderer(SPEC)
    return {f"{text}_{i}.png": renderer.render(text, i) for i, text in enumerate(["12", "34", "56"])}


def predicted(out):
    return sorted(os.path.basename(line.split("\t")[0]) for line in out.splitlines() if "\t" in line)


def errors(err):
    return {os.path.basename(line.split(": ")[1]): line.split(": ", 2)[2]
            for line in err.splitlines() if line.startswith("error: ")}


@pytest.mark.timeout(60, func_only=True)
def test_gif_and_bmp_saved_as_png_among_good_files(tiny_model, good, tmp_path):
    for name, data in good.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "gif.png").write_bytes(as_format("GIF"))
    (tmp_path / "bmp.png").write_bytes(as_format("BMP"))
    status, out, err = run_predict(tiny_model, tmp_path)
    assert status == 1
    assert predicted(out) == sorted(good)
    assert errors(err) == {"gif.png": "not a PNG or JPEG image", "bmp.png": "not a PNG or JPEG image"}
    assert "predicted 3 file(s), 2 error(s)" in out and "Traceback" not in err


@pytest.mark.timeout(60, func_only=True)
def test_files_that_are_not_images_on_disk(tiny_model, good, tmp_path):
    for name, data in good.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")  # opening it for reading would block until a writer comes
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with open(tmp_path / "huge.png", "wb") as f:  # sparse: 1 GiB claimed, nothing written
        f.write(list(good.values())[0])
        f.truncate(1 << 30)
    status, out, err = run_predict(tiny_model, tmp_path)
    assert status == 1 and predicted(out) == sorted(good)
    assert errors(err) == {"folder.png": "is a folder, not a regular file", "fifo.png": "is a FIFO, not a regular file",
                           "dangling.png": "No such file or directory",
                           "huge.png": f"larger than {images.MAX_IMAGE_BYTES} bytes: not a captcha image"}


@pytest.mark.timeout(60, func_only=True)
def test_undecodable_file_in_a_batch_spoils_only_itself(tiny_model, good, tmp_path):
    names = sorted(good)
    for name in names:
        (tmp_path / name).write_bytes(good[name])
    png = bytearray(good[names[0]])
    png[-16] ^= 0xFF  # the image data's CRC: the policy does not check it, libpng refuses it while decoding
    (tmp_path / f"{names[0][:-4]}_cut.png").write_bytes(png)
    status, out, err = run_predict(tiny_model, tmp_path, batch_size=4)
    assert status == 1 and predicted(out) == names
    [(name, reason)] = errors(err).items()
    assert name.endswith("_cut.png") and reason.startswith("could not decode: ")
    assert "predicted 3 file(s), 1 error(s)" in out


def memory_kib():
    """This process's resident and peak resident memory, KiB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@pytest.mark.timeout(60, func_only=True)
def test_a_decompression_bomb_is_refused_from_its_header(tiny_model, good, png_bomb, tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_bomb)
    (tmp_path / "12_0.png").write_bytes(good["12_0.png"])
    run_predict(tiny_model, tmp_path / "12_0.png")  # the model's own memory, once
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current resident size
    before, _ = memory_kib()
    status, out, err = run_predict(tiny_model, tmp_path)
    assert status == 1 and predicted(out) == ["12_0.png"]
    assert errors(err) == {"bomb.png": "image is 20000x20000, the model reads 40x24"}
    assert memory_kib()[1] - before < 100 << 10  # decoding the bomb would take 381 MiB
