"""Variable-length captchas (`generate --length MIN-MAX`) end to end: the spec and its manifests, the label plan,
the readers' padded labels and lengths, inspect, train with each head, evaluate per length with the CER, predict."""
import json
import os
import subprocess
import sys

import pytest

from tfrecord.errors import SpecError
from tfrecord.spec import CaptchaSpec, parse_length

RANGE = ("-d", "--length", "3-5", "--width", "60", "--height", "24", "--train-examples", "96",
         "--validation-examples", "24", "--test-examples", "24", "--num-shards", "2", "--holdout-labels")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(make_dataset):
    return make_dataset(*RANGE)


def test_spec_records_both_lengths_and_older_manifests_read_as_fixed():
    spec = CaptchaSpec(length=5, min_length=3)
    assert spec.variable and list(spec.lengths) == [3, 4, 5] and spec.pad == 10 and spec.width == 140
    assert spec.to_dict()["min_length"] == 3 and CaptchaSpec.from_dict(spec.to_dict()) == spec
    old = {k: v for k, v in CaptchaSpec(length=4).to_dict().items() if k != "min_length"}
    assert CaptchaSpec.from_dict(old).min_length == 4 and not CaptchaSpec.from_dict(old).variable
    assert spec.encode_label("123") == [1, 2, 3] and spec.decode_label([1, 2, 3, 10, 10]) == "123"
    for text in ("12", "123456"):
        with pytest.raises(SpecError, match="is not 3-5 characters"):
            spec.encode_label(text)
    assert parse_length("4") == (4, 4) and parse_length("4-6") == (4, 6)
    for bad in ("6-4", "0", "a-b", "4-", "-4"):
        with pytest.raises(SpecError):
            parse_length(bad)
    with pytest.raises(SpecError, match="min_length must be between 1 and length 4"):
        CaptchaSpec(length=4, min_length=5)


def test_manifest_without_min_length_reads_as_fixed(tiny_dataset):
    from tfrecord.manifest import Manifest

    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    del manifest["spec"]["min_length"]
    spec = Manifest.from_json(json.dumps(manifest)).spec
    assert spec.min_length == spec.length == 2


def test_uniform_length_then_characters_and_holdout_partitions_every_length():
    from beam_jobs.labels import UniformLabels

    spec = CaptchaSpec(alphabet="abc", length=3, min_length=1)
    labels = UniformLabels(spec, 0, 0.25)
    assert labels.space == 3 + 9 + 27 and labels.held_outs == {1: 1, 2: 2, 3: 7}
    train = [labels.label("train", i) for i in range(3000)]
    test = [labels.label("test", i) for i in range(3000)]
    for length in (1, 2, 3):  # each length about a third of the examples, whatever its label space
        assert 850 < sum(len(t) == length for t in train) < 1150
    held_out = {t for t in test}
    assert held_out == {t for t in held_out if labels.is_holdout(t)} and len(held_out) == labels.held_out
    assert not held_out & set(train) and len(set(train)) == labels.space - labels.held_out


def test_fixed_length_labels_are_unchanged_by_the_range_support():
    from beam_jobs.labels import UniformLabels

    held_out = UniformLabels(CaptchaSpec(length=4), 7, 0.1)  # as plan version 2 drew them before lengths could vary
    assert [held_out.label("train", i) for i in range(4)] == ["3301", "8656", "5301", "6457"]
    assert [held_out.label("test", i) for i in range(2)] == ["7320", "5580"]
    assert [UniformLabels(CaptchaSpec(length=4), 7).label("train", i) for i in range(3)] == ["3708", "5953", "2291"]


def test_permutations_with_a_range_is_refused_in_one_line(tmp_path, capsys):
    from beam_jobs import generate

    assert generate.main(["--output", str(tmp_path / "out"), "-d", "--length", "3-5", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --permutations takes one --length, not the range 3-5: generate uniform labels "
                   "(--train-examples) for variable lengths\n")
    assert not (tmp_path / "out").exists()
    assert generate.main(["--output", str(tmp_path / "out"), "-d", "--length", "5-3"]) == 2
    assert capsys.readouterr().err == "error: --length: must be N or MIN-MAX with 1 <= MIN <= MAX, e.g. 4-6 (got 5-3)\n"


def test_readers_pad_labels_and_give_lengths(data):
    from tfrecord.channels import channel
    from tfrecord.manifest import read_manifest

    manifest = read_manifest(data)
    spec = manifest.spec
    assert (spec.min_length, spec.length, spec.width) == (3, 5, 60)
    batches = list(channel("train", spec, 32, path=str(data / "train"), manifest=manifest, lengths=True))
    labels = [row for _, y, _ in batches for row in y.numpy().tolist()]
    lengths = [n for _, _, n in batches for n in n.numpy().tolist()]
    assert len(labels) == 96 and set(lengths) == {3, 4, 5}
    for row, n in zip(labels, lengths):
        assert len(row) == 5 and all(0 <= i < 10 for i in row[:n]) and row[n:] == [spec.pad] * (5 - n)
    # without lengths: (images, labels) as for a fixed length
    images, y = next(iter(channel("train", spec, 32, path=str(data / "train"), manifest=manifest)))
    assert images.shape == (32, 24, 60, 1) and y.shape == (32, 5)


def test_inspect_reads_every_length(data, capsys):
    from launch import cli

    assert cli.main(["inspect", str(data)]) == 0
    out = capsys.readouterr().out
    assert "3-5 of '0123456789', 60x24" in out and "ok: 144 examples match dataset.json" in out


@pytest.mark.parametrize("head", ["per-position", "ctc"])
def test_train_evaluate_predict_each_head(data, head, train_args, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from trainer import evaluate, export, predict, serve, train

    out = tmp_path / "run"
    assert train.main(train_args(str(data), str(out), "--epochs", "1", "--head", head)) == 0
    curve = json.loads((out / "output/learning_curve.json").read_text())
    assert [e["epoch"] for e in curve["epochs"]] == [1] and (out / "output/learning_curve.png").exists()
    model, spec = export.load(str(out / "model"))
    assert spec.min_length == 3
    classes = model.signatures["serving_pixels"].structured_outputs["probabilities"].shape[-1]
    assert classes == 11  # the alphabet and "end" (per-position) or the blank (ctc)

    report, gallery = tmp_path / "report.json", tmp_path / "errors.png"
    assert evaluate.main(["--model-dir", str(out / "model"), "--data", str(data / "test"), "--report", str(report),
                          "--gallery", str(gallery), "--samples", str(tmp_path / "samples"), "--num-samples", "6"]) == 0
    result = json.loads(report.read_text())
    assert result["examples"] == 24 and set(result["per_length"]) == {"3", "4", "5"}
    assert sum(r["examples"] for r in result["per_length"].values()) == 24
    assert result["character_error_rate"] >= 0 and len(result["per_position_accuracy"]) == 5
    assert "character_error_rate=" in capsys.readouterr().out

    assert predict.main(["--model-dir", str(out / "model"), str(tmp_path / "samples")]) == 0
    printed = capsys.readouterr().out
    assert "predicted 6 file(s), 0 error(s)" in printed and "/6 labelled files)" in printed

    # serve: both signatures, the text of any length the model reads (what predict printed for that file)
    sample = sorted((tmp_path / "samples").iterdir())[0]
    client = serve.create_app(str(out / "model")).test_client()
    by_bytes = client.post("/invocations", data=sample.read_bytes(), content_type="image/png")
    pixels = np.asarray(Image.open(sample))[:, :, None].tolist()
    by_pixels = client.post("/invocations", json={"signature_name": "serving_pixels", "instances": [pixels]})
    assert by_bytes.status_code == by_pixels.status_code == 200
    text = by_bytes.json["predictions"][0]["text"]
    assert by_pixels.json["predictions"][0]["text"] == text and len(text) <= 5 and set(text) <= set(spec.alphabet)
    assert f"{sample}\t{text}\t" in printed


def test_generate_through_the_cli_names_the_range(tmp_path):
    """The dry run states the range and the union of the label spaces."""
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "generate", "--output", str(tmp_path / "d"), "-d",
                           "--length", "3-5", "--holdout-labels", "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "3-5 of '0123456789', 140x100" in proc.stdout and "uniform over 111,000 labels" in proc.stdout
