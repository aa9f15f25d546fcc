"""Bounds checked before any work: numbers whose range would make work or memory explode (or mean something
silently), manifests of any size or depth, hyperparameters checked against the trainer's own flags without
TensorFlow, and a JPEG shown turned by its EXIF orientation refused with the same words in `predict`, `serve`
and the SavedModel's bytes signature."""
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from launch import inspect_dataset
from launch.cli import main
from tfrecord.errors import ManifestError
from tfrecord.manifest import MAX_MANIFEST_BYTES, Manifest, read_manifest
from trainer import images
from trainer.arguments import MAX_CPU_DEVICES


def test_more_cpu_devices_than_the_host_has_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--cpu-devices", "100000"]) == 2
    assert capsys.readouterr().err == (f"error: --cpu-devices: must be at most {MAX_CPU_DEVICES} (this host's CPU "
                                       "cores, or 2) (got 100000)\n")
    assert os.listdir(tmp_path) == []


def test_a_scale_that_leaves_the_model_no_pixels_is_one_line_before_training(tiny_dataset, tmp_path, train_args,
                                                                             capsys):
    from trainer import train

    assert train.main(train_args(tiny_dataset, tmp_path / "out", "--scale", "0.01")) == 2
    assert capsys.readouterr().err == ("error: --scale 0.01: the model would see 0x0 px of the 40x24 render; it "
                                       "needs at least 8 px each way\n")
    assert not (tmp_path / "out").exists()


def test_generate_width_has_no_zero_default(tmp_path):
    """--width absent is the default width; 0 is refused by the flags (see test_faults_flags), never the default."""
    from beam_jobs.generate import parse_args

    args, _ = parse_args(["--output", str(tmp_path / "out"), "-d"])
    assert args.width is None


def manifest_text(tiny_dataset, **changes):
    d = json.loads((tiny_dataset / "dataset.json").read_text())
    d.update(changes)
    return json.dumps(d)


@pytest.mark.parametrize("changes, problem", [
    ({"format_version": True}, "unsupported format_version True"),
    ({"format_version": 1.0}, "unsupported format_version 1.0"),
    ({"seed": -5}, "seed: must be greater than or equal to 0, got -5"),
])
def test_manifest_values_of_the_wrong_kind_are_refused_by_the_schema(tiny_dataset, changes, problem):
    with pytest.raises(ManifestError) as e:
        Manifest.from_json(manifest_text(tiny_dataset, **changes), source="m.json")
    assert str(e.value) == f"m.json: {problem}"


def test_a_deeply_nested_manifest_is_one_line(tiny_dataset, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    (root / "dataset.json").write_text("[" * 100000 + "]" * 100000)
    assert inspect_dataset.main([str(root)]) == 2
    assert capsys.readouterr().err == f"error: {root}/dataset.json: not a valid dataset manifest (JSON nested too deeply)\n"


def test_a_huge_manifest_is_refused_reading_no_more_than_the_cap(tmp_path):
    """A 100 MB dataset.json: one line, and the process reading it stays far below the file's size (it reads at
    most MAX_MANIFEST_BYTES + 1). Measured in a fresh process (its peak RSS, VmHWM)."""
    root = tmp_path / "data"
    root.mkdir()
    with open(root / "dataset.json", "w") as f:
        f.write('{"format_version": 1, "pad": "')
        for _ in range(100):
            f.write("x" * (1 << 20))
        f.write('"}')
    # VmHWM: this process image's peak RSS (ru_maxrss would carry the forking test process's over exec)
    probe = ("import re, sys\nfrom tfrecord.errors import ManifestError\nfrom tfrecord.manifest import read_manifest\n"
             "try:\n    read_manifest(sys.argv[1])\nexcept ManifestError as e:\n    print(e)\n"
             "print(int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1]) // 1024)")  # KiB -> MiB
    done = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True, check=True)
    line, peak_mib = done.stdout.splitlines()
    assert line == f"{root}/dataset.json: more than {MAX_MANIFEST_BYTES >> 20} MiB, more than any dataset manifest"
    assert int(peak_mib) < 100 + 2 * (MAX_MANIFEST_BYTES >> 20)  # imports (~60 MiB) and the capped read, not 100 MB


def test_an_s3_manifest_is_read_up_to_the_cap(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    big = b'{"format_version": 1, "pad": "' + b"x" * MAX_MANIFEST_BYTES + b'"}'
    s3.client.put_object(Bucket=s3.bucket, Key="big/dataset.json", Body=big)
    with pytest.raises(ManifestError) as e:
        read_manifest(f"s3://{s3.bucket}/big")
    assert str(e.value) == (f"s3://{s3.bucket}/big/dataset.json: more than {MAX_MANIFEST_BYTES >> 20} MiB, more than "
                            "any dataset manifest")


def test_the_launchers_check_hyperparameters_without_tensorflow():
    probe = ("import sys\nfrom launch import job_config\nfrom tfrecord.errors import UserError\n"
             "try:\n    job_config.hyperparameters(['epochs=abc'])\nexcept UserError as e:\n    print(e)\n"
             "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == "--hp: --epochs: 'abc' is not an integer\nFalse False\n"


def rotated_jpeg(orientation, size=(40, 24)):
    from PIL import Image

    image = Image.new("L", size, 255)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_jpeg_shown_turned_is_refused_by_the_image_policy(tiny_spec, orientation):
    assert images.refusal(rotated_jpeg(orientation), tiny_spec) == images.JPEG_ORIENTED
    assert images.refusal(rotated_jpeg(1), tiny_spec) is None  # upright: read as it is


def test_the_bytes_signature_refuses_a_jpeg_shown_turned_in_the_same_words(tiny_spec):
    import tensorflow as tf

    from trainer import export

    upright = export.decode_images(tf.constant([rotated_jpeg(1)]), tiny_spec)
    assert upright.shape == (1, *tiny_spec.input_shape)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        export.decode_images(tf.constant([rotated_jpeg(6)]), tiny_spec)
    assert images.JPEG_ORIENTED in str(e.value)


def test_predict_serve_and_the_signature_refuse_a_jpeg_shown_turned_in_one_line(tiny_model, tmp_path, capsys):
    import tensorflow as tf

    from trainer import export, predict, serve

    turned = rotated_jpeg(6)
    (tmp_path / "turned.jpg").write_bytes(turned)
    assert predict.main(["--model-dir", str(tiny_model), str(tmp_path / "turned.jpg")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'turned.jpg'}: {images.JPEG_ORIENTED}\n"
    answer = serve.create_app(str(tiny_model)).test_client().post("/invocations", data=turned, content_type="image/jpeg")
    assert (answer.status_code, answer.json) == (400, {"error": f"instance 0: {images.JPEG_ORIENTED}"})
    default = export.load(str(tiny_model))[0].signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        default(image_bytes=tf.constant([turned]))
    assert images.JPEG_ORIENTED in refused.value.message
