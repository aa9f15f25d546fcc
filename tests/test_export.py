"""Train a tiny model once; it must learn, export, reload elsewhere, evaluate and predict."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trainer_data import TINY, TINY_SPEC, train_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_dataset):
    from trainer import train

    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(*TINY)
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


def test_export_layout_and_signatures(trained):
    from trainer import export

    version = trained / "model/1"
    assert (version / "saved_model.pb").exists() and (trained / "model/model.keras").exists()
    assert json.loads((version / "assets.extra/captcha_spec.json").read_text()) == TINY_SPEC.to_dict()
    model, spec = export.load(str(trained / "model"))
    assert spec == TINY_SPEC
    default = model.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image_bytes"]
    assert set(default.structured_outputs) == {"text", "probabilities", "confidence"}
    assert list(model.signatures["serving_pixels"].structured_input_signature[1]) == ["pixels"]


def _predict_in_process(model_dir, images):
    import tensorflow as tf

    from trainer import export

    model, _ = export.load(model_dir)
    out = model.signatures["serving_default"](image_bytes=tf.constant(images))
    return [t.decode() for t in out["text"].numpy()], out["probabilities"].numpy().tolist()


def test_reload_in_fresh_process_gives_same_predictions(trained):
    import keras

    from beam_jobs.render import Renderer

    renderer = Renderer(TINY_SPEC)
    images = [renderer.render(t, i) for i, t in enumerate(["01", "10", "11", "00"])]
    model_dir = str(trained / "model")
    code = ("import json, sys; sys.path.insert(0, 'tests'); from test_export import _predict_in_process; "
            f"print(json.dumps(_predict_in_process({model_dir!r}, [bytes.fromhex(h) for h in {[i.hex() for i in images]!r}])))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.dirname(__file__)))
    texts, probabilities = json.loads(fresh.stdout.strip().splitlines()[-1])
    here_texts, here_probabilities = _predict_in_process(model_dir, images)
    assert texts == here_texts
    np.testing.assert_allclose(probabilities, here_probabilities, atol=1e-5)
    # the .keras file is the same model
    import tensorflow as tf
    from trainer.export import decode_images

    keras_model = keras.saving.load_model(str(trained / "model/model.keras"))
    np.testing.assert_allclose(keras_model.predict(decode_images(tf.constant(images), TINY_SPEC), verbose=0),
                               here_probabilities, atol=1e-5)


def test_evaluate_refuses_other_spec(trained, tmp_path, capsys, make_dataset):
    from trainer import evaluate

    other = make_dataset("--chars", "012", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "4",
                         "--validation-examples", "4", "--test-examples", "4", "--num-shards", "1")
    assert evaluate.main(["--model-dir", str(trained / "model"), "--data", f"{other}/test",
                          "--report", str(tmp_path / "r.json"), "--gallery", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model spec") and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_predict_files_and_folders(trained, tmp_path, capsys):
    from beam_jobs.render import Renderer
    from trainer import predict

    renderer = Renderer(TINY_SPEC)
    for i, text in enumerate(["01", "10", "11"]):
        (tmp_path / f"{text}_{i:08d}.png").write_bytes(renderer.render(text, 100 + i))
    (tmp_path / "notes.png").write_bytes(b"not an image")
    big = tmp_path / "big" / "01_x.png"
    big.parent.mkdir()
    big.write_bytes(Renderer(TINY_SPEC.__class__(alphabet="01", length=2, width=60, height=24)).render("01", 1))
    assert predict.main(["--model-dir", str(trained / "model"), str(tmp_path), str(big)]) == 1
    out = capsys.readouterr()
    assert "notes.png: not a PNG or JPEG image" in out.err and "image is 60x24" in out.err
    assert out.out.count("\t") == 6 and "predicted 3 file(s), 2 error(s)" in out.out
    # the accuracy line agrees with the per-file verdicts (how many the tiny model gets right varies by run)
    right = out.out.count("  ok\n")
    assert out.out.count("  WRONG (truth ") == 3 - right
    assert f"accuracy={right / 3:.4f} ({right}/3 labelled files)" in out.out
