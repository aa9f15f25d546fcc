"""Train a tiny model once; it must learn, export, reload elsewhere, evaluate and predict."""
import dataclasses
import io
import json
import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from tfrecord.spec import CaptchaSpec


@pytest.fixture(scope="module")
def trained(tmp_path_factory, learnable_dataset, train_args):
    from trainer import train

    root = tmp_path_factory.mktemp("trained")
    data = learnable_dataset
    (root / "data").symlink_to(data)
    assert train.main(train_args(data, str(root), "--epochs", "12")) == 0
    return root


def test_learns_above_chance(trained, tmp_path, capsys):
    from trainer import evaluate

    report, gallery = tmp_path / "report.json", tmp_path / "errors.png"
    assert evaluate.main(["--model-dir", str(trained / "model"), "--data", str(trained / "data/test"),
                          "--report", str(report), "--gallery", str(gallery), "--samples", str(tmp_path / "s"),
                          "--num-samples", "3"]) == 0
    assert len([n for n in os.listdir(tmp_path / "s") if n[2] == "_" and n.endswith(".png")]) == 3
    result = json.loads(report.read_text())
    assert result["examples"] == 64 and result["sequence_accuracy"] > 0.6  # chance: 0.25
    assert len(result["per_position_accuracy"]) == 2 and set(result["confusion"]) <= {"0", "1"}
    assert gallery.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sequence_accuracy=" in capsys.readouterr().out


def test_export_layout_and_signatures(trained, learnable_spec):
    from trainer import export

    version = trained / "model/1"
    assert (version / "saved_model.pb").exists() and (trained / "model/model.keras").exists()
    assert json.loads((version / "assets.extra/captcha_spec.json").read_text()) == learnable_spec.to_dict()
    model, spec = export.load(str(trained / "model"))
    assert spec == learnable_spec
    default = model.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image_bytes"]
    assert set(default.structured_outputs) == {"text", "probabilities", "confidence"}
    assert list(model.signatures["serving_pixels"].structured_input_signature[1]) == ["pixels"]


def test_reload_in_fresh_process_gives_same_predictions(trained, learnable_spec, serving_predictions):
    from beam_jobs.render import Renderer

    renderer = Renderer(learnable_spec)
    images = [renderer.render(t, i) for i, t in enumerate(["01", "10", "11", "00"])]
    model_dir = str(trained / "model")
    texts, probabilities = serving_predictions(model_dir, images, fresh_process=True)
    here_texts, here_probabilities = serving_predictions(model_dir, images)
    assert texts == here_texts
    np.testing.assert_allclose(probabilities, here_probabilities, atol=1e-5)
    # the .keras file is the same model
    import tensorflow as tf
    from trainer.export import decode_images

    keras_model = keras.saving.load_model(str(trained / "model/model.keras"))
    np.testing.assert_allclose(keras_model.predict(decode_images(tf.constant(images), learnable_spec), verbose=0),
                               here_probabilities, atol=1e-5)


def test_evaluate_refuses_other_spec(trained, tmp_path, capsys, make_dataset):
    from trainer import evaluate

    other = make_dataset("--chars", "012", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "4",
                         "--validation-examples", "4", "--test-examples", "4", "--num-shards", "1")
    capsys.readouterr()  # the Beam job's progress
    assert evaluate.main(["--model-dir", str(trained / "model"), "--data", f"{other}/test",
                          "--report", str(tmp_path / "r.json"), "--gallery", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model spec") and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_predict_files_and_folders(trained, learnable_spec, tmp_path, capsys):
    from beam_jobs.render import Renderer
    from trainer import predict

    renderer = Renderer(learnable_spec)
    for i, text in enumerate(["01", "10", "11"]):
        (tmp_path / f"{text}_{i:08d}.png").write_bytes(renderer.render(text, 100 + i))
    (tmp_path / "notes.png").write_bytes(b"not an image")
    big = tmp_path / "big" / "01_x.png"
    big.parent.mkdir()
    big.write_bytes(Renderer(learnable_spec.__class__(alphabet="01", length=2, width=60, height=24)).render("01", 1))
    assert predict.main(["--model-dir", str(trained / "model"), str(tmp_path), str(big)]) == 1
    out = capsys.readouterr()
    assert "notes.png: not a PNG or JPEG image" in out.err and "image is 60x24" in out.err
    assert out.out.count("\t") == 6 and "predicted 3 file(s), 2 error(s)" in out.out
    # the accuracy line agrees with the per-file verdicts (how many the tiny model gets right varies by run)
    right = out.out.count("  ok\n")
    assert out.out.count("  WRONG (truth ") == 3 - right
    assert f"accuracy={right / 3:.4f} ({right}/3 labelled files)" in out.out


# raw 20x20 pixels stored from a 40x40 render; at --scale 0.5 the model reads them without resizing
RAW = ("--chars", "01", "--length", "2", "--width", "40", "--height", "40", "--image-format", "raw", "--store-size",
       "20x20", "--train-examples", "256", "--validation-examples", "64", "--test-examples", "128", "--num-shards", "2")


@pytest.fixture(scope="module")
def raw_trained(tmp_path_factory, make_dataset, train_args):
    from trainer import train

    root = tmp_path_factory.mktemp("raw")
    data = make_dataset(*RAW)
    (root / "data").symlink_to(data)
    assert train.main(train_args(data, str(root), "--epochs", "6", "--scale", "0.5")) == 0
    return root


def test_raw_pixels_and_render_size_pngs_give_the_same_predictions(raw_trained):
    """serving_pixels on the stored raw test split vs serving_default on each captcha re-rendered as a PNG at the
    render size (same example seed): the signature's downscale is the producer's, so they agree."""
    import tensorflow as tf

    from beam_jobs.render import Renderer, example_seed
    from tfrecord import framing, schema
    from tfrecord.manifest import read_manifest
    from trainer import export

    manifest = read_manifest(str(raw_trained / "data"))
    spec = manifest.spec
    model, model_spec = export.load(str(raw_trained / "model"))
    assert model_spec == spec and spec.input_shape == (20, 20, 1)
    assert "resize" not in [layer.name for layer in keras.saving.load_model(str(raw_trained / "model/model.keras")).layers]
    pngs, pixels = [], []
    renderer = Renderer(dataclasses.replace(spec, image_format="png", store_width=0, store_height=0))
    shards = manifest.split("test").shards
    for k, shard in enumerate(shards):
        data = (raw_trained / "data" / shard.path).read_bytes()
        for position, record in enumerate(framing.read_records(io.BytesIO(data), shard.path)):
            parsed = schema.parse_example(tf.constant(record), spec)
            index = k + position * len(shards)  # example i of a split is record i // n of shard i % n
            pngs.append(renderer.render(parsed[schema.TEXT].numpy().decode(), example_seed(manifest.seed, "test", index)))
            pixels.append(schema.decode_raw(parsed[schema.IMAGE], spec))
    assert len(pngs) == 128 and Image.open(io.BytesIO(pngs[0])).size == (40, 40)
    from_pixels = model.signatures["serving_pixels"](pixels=tf.stack(pixels))
    from_pngs = model.signatures["serving_default"](image_bytes=tf.constant(pngs))
    agree = np.mean(from_pixels["text"].numpy() == from_pngs["text"].numpy())
    assert agree >= 0.99, agree
    np.testing.assert_allclose(from_pixels["probabilities"], from_pngs["probabilities"], atol=1e-4)


def test_bytes_signature_size_policy(raw_trained):
    import tensorflow as tf

    from beam_jobs.render import Renderer
    from trainer import export

    model, spec = export.load(str(raw_trained / "model"))
    default = model.signatures["serving_default"]
    stored_png = Renderer(dataclasses.replace(spec, image_format="png")).render("01", 5)
    jpeg = io.BytesIO()
    Renderer(dataclasses.replace(spec, image_format="png", store_width=0)).image("01", 5).save(jpeg, "JPEG", quality=95)
    assert Image.open(io.BytesIO(stored_png)).size == (20, 20)
    assert default(image_bytes=tf.constant([stored_png, jpeg.getvalue()]))["text"].shape == (2,)
    bomb = io.BytesIO()
    Image.new("L", (20000, 20000)).save(bomb, "PNG")  # 20 KB that would decode to 400 MB
    other = Renderer(CaptchaSpec(alphabet="01", length=2, width=30, height=30)).render("01", 1)
    for data, reason in [(other, "image is 30x30, the model reads 40x40 or 20x20"),
                         (bomb.getvalue(), "image is 20000x20000"), (b"GIF89a\x01\x00\x01\x00", "not a PNG or JPEG"),
                         (b"\x89PNG\r\n\x1a\n", "truncated PNG")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=reason):
            default(image_bytes=tf.constant([stored_png, data]))


def test_evaluate_and_predict_a_raw_model(raw_trained, tmp_path, capsys):
    from trainer import evaluate, predict

    samples = tmp_path / "samples"
    assert evaluate.main(["--model-dir", str(raw_trained / "model"), "--data", str(raw_trained / "data/test"),
                          "--report", str(tmp_path / "r.json"), "--gallery", str(tmp_path / "g.png"),
                          "--samples", str(samples), "--num-samples", "4"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["examples"] == 128
    assert Image.open(tmp_path / "g.png").mode == "RGB"
    assert sorted(Image.open(p).size for p in samples.iterdir()) == [(20, 20)] * 4
    capsys.readouterr()
    assert predict.main(["--model-dir", str(raw_trained / "model"), str(samples)]) == 0
    assert "/4 labelled files)" in capsys.readouterr().out


def test_evaluate_checks_outputs_first_and_names_samples_safely(tmp_path, capsys, make_dataset):
    """Labels made of `/` and `_` become safe file names; an unwritable --report fails before any evaluation."""
    from trainer import evaluate, export, predict
    from trainer.model import build_model

    data = make_dataset("--chars", "/_", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "4",
                        "--validation-examples", "4", "--test-examples", "8", "--num-shards", "1")
    capsys.readouterr()  # the Beam job's progress
    spec = CaptchaSpec(alphabet="/_", length=2, width=40, height=24)
    export.export(build_model(spec), spec, str(tmp_path / "model"))  # untrained: only the plumbing matters
    args = ["--model-dir", str(tmp_path / "model"), "--data", f"{data}/test", "--gallery", str(tmp_path / "g.png")]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert evaluate.main([*args, "--report", str(blocker / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --report: {blocker / 'r.json'}: cannot be written ({blocker} is a file)\n"
    assert not (tmp_path / "g.png").exists()
    assert evaluate.main([*args, "--report", str(tmp_path / "r.json"), "--samples", str(tmp_path / "s")]) == 0
    from tfrecord import schema
    from tfrecord.framing import read_records

    with open(f"{data}/test/test-00000-of-00001.tfrecord", "rb") as f:  # the 8 test examples, in order
        texts = [schema.decode_example(r)[schema.TEXT][0].decode() for r in read_records(f, "test")]
    escaped = {"/": "%2F", "_": "%5F"}
    assert sorted(os.listdir(tmp_path / "s")) == sorted(
        f"{escaped[a]}{escaped[b]}_{n:05d}.png" for n, (a, b) in enumerate(texts))
    capsys.readouterr()
    assert predict.main(["--model-dir", str(tmp_path / "model"), str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    read_back = {}  # predict reads each label back from its file name: "  ok", or "  WRONG (truth <label>)"
    for line in out.splitlines():
        if "\t" in line:
            path, text, rest = line.split("\t")
            read_back[os.path.basename(path)] = text if rest.endswith("  ok") else rest.split("(truth ")[1][:-1]
    assert sorted(read_back.values()) == sorted(texts) and len(read_back) == 8
    assert out.endswith("predicted 8 file(s), 0 error(s)\n")


def test_a_broken_model_dir_is_one_line(trained, tmp_path, capsys):
    """A spec but no saved_model.pb, a cut saved_model.pb, a spec that is not JSON or not a spec."""
    from trainer import predict

    broken = tmp_path / "model"
    shutil.copytree(trained / "model", broken)
    pb, spec = broken / "1/saved_model.pb", broken / "1/assets.extra/captcha_spec.json"
    good_pb, good_spec = pb.read_bytes(), spec.read_text()
    for damage, told in [(lambda: pb.unlink(), "no saved_model.pb beside assets.extra/captcha_spec.json"),
                         (lambda: pb.write_bytes(good_pb[:100]), "cannot load the SavedModel (OSError: "),
                         (lambda: spec.write_text("{"), "captcha_spec.json: not a captcha spec (JSONDecodeError"),
                         (lambda: spec.write_text("[]"), "captcha_spec.json: not a captcha spec (TypeError")]:
        pb.write_bytes(good_pb)
        spec.write_text(good_spec)
        damage()
        assert predict.main(["--model-dir", str(broken), str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and told in err and err.count("\n") == 1, err


def test_62_classes_by_6_characters(tmp_path, capsys, make_dataset, train_args):
    """-d -l -u at length 6: generate, train (one short epoch), evaluate and predict."""
    from trainer import evaluate, predict, train

    data = make_dataset("-d", "-l", "-u", "--length", "6", "--width", "60", "--height", "20", "--image-format", "raw",
                        "--train-examples", "64", "--validation-examples", "16", "--test-examples", "16", "--num-shards", "1")
    assert train.main(train_args(data, str(tmp_path), "--epochs", "1")) == 0
    assert evaluate.main(["--model-dir", str(tmp_path / "model"), "--data", f"{data}/test", "--report",
                          str(tmp_path / "r.json"), "--gallery", str(tmp_path / "g.png"), "--samples", str(tmp_path / "s")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["per_position_accuracy"]) == 6 and len(report["spec"]["alphabet"]) == 62
    capsys.readouterr()
    assert predict.main(["--model-dir", str(tmp_path / "model"), str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "/8 labelled files)" in out and "predicted 8 file(s), 0 error(s)" in out


def test_serve_a_raw_model(raw_trained):
    """`serve` takes a raw model's captchas at the render size and at the stored size alike."""
    from beam_jobs.render import Renderer
    from trainer import serve

    spec = CaptchaSpec.from_dict(json.loads((raw_trained / "model/1/assets.extra/captcha_spec.json").read_text()))
    render = Renderer(dataclasses.replace(spec, image_format="png", store_width=0, store_height=0)).render("10", 9)
    stored = Renderer(dataclasses.replace(spec, image_format="png")).render("10", 9)
    client = serve.create_app(str(raw_trained / "model")).test_client()
    answers = [client.post("/invocations", data=png, content_type="image/png") for png in (render, stored)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json["predictions"][0]["text"] == answers[1].json["predictions"][0]["text"]
    other = Renderer(CaptchaSpec(alphabet="01", length=2, width=30, height=30)).render("10", 9)
    refused = client.post("/invocations", data=other, content_type="image/png")
    assert refused.status_code == 400 and "image is 30x30, the model reads 40x40 or 20x20" in refused.json["error"]


def test_an_export_cut_short_is_refused(tmp_path, monkeypatch):
    """The spec is written last and atomically: an export that dies on the way, over an older one too,
    leaves a model dir that `load` refuses rather than a mix of old and new."""
    from tfrecord.errors import UserError
    from trainer import export
    from trainer.model import build_model

    spec = CaptchaSpec(alphabet="01", length=2, width=40, height=24)
    export.export(build_model(spec), spec, str(tmp_path / "model"))
    assert export.load(str(tmp_path / "model"))[1] == spec

    def dies(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", dies)
    with pytest.raises(UserError, match="model: no space left on device"):
        export.export(build_model(spec), spec, str(tmp_path / "model"))
    with pytest.raises(UserError, match="not an exported captcha model"):
        export.load(str(tmp_path / "model"))
