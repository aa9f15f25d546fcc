"""The seed's workflow: `generate -d --npi=N -n K` writes train and test only (no validation split, as
`gen_captcha.py` did), and `launch local` and `train` train on it with a train channel alone, on one host
and on two; `--validation-rounds` adds a validation split in permutation mode."""
import json
import tarfile

import pytest

from launch import local

# the seed's permutation mode, small: every arrangement of 2 distinct digits once (90 train, 90 test)
SEED_STYLE = ("-d", "--npi", "2", "-n", "1", "--width", "40", "--height", "24", "--num-shards", "3")
NO_VALIDATION = "no validation split: no validation figures and no early stopping; the last weights are exported"


@pytest.fixture(scope="module")
def seed_dataset(make_dataset):
    return make_dataset(*SEED_STYLE)


def test_the_seed_style_dataset_has_train_and_test_only(seed_dataset):
    manifest = json.loads((seed_dataset / "dataset.json").read_text())
    assert {split: info["examples"] for split, info in manifest["splits"].items()} == {"train": 90, "test": 90}
    assert not (seed_dataset / "validation").exists()


@pytest.mark.parametrize("hosts", [1, 2])
def test_launch_local_trains_without_validation_and_the_model_evaluates(seed_dataset, tmp_path, capsys, hosts):
    """A train channel alone: no validation figures, no early stopping, the last weights exported (the
    checkpoint keeps no best weights), one line saying so; the exported model scores the test split."""
    from trainer import checkpoint, evaluate

    args = [str(seed_dataset), "--output-path", str(tmp_path / "jobs"), "--job-name", "seed", "--input-mode", "Pipe",
            "--instance-count", str(hosts), "--checkpoint-path", str(tmp_path / "checkpoints"),
            "--hp", "epochs=2", "--hp", "batch-size=16", "--hp", "scale=1", "--hp", "patience=1"]
    assert local.main(args) == 0
    out = capsys.readouterr().out
    prefix = "[algo-1] " if hosts > 1 else ""
    assert out.count(NO_VALIDATION) == 1 and f"{prefix}{NO_VALIDATION}\n" in out, out
    epochs = [line for line in out.splitlines() if " epoch=" in line or line.startswith("epoch=")]
    assert len(epochs) == 2 and not any("val_" in line for line in epochs), out
    assert "early stopping:" not in out
    saved = checkpoint.load_progress(tmp_path / "checkpoints")
    assert (saved.epoch, saved.step, saved.best, saved.stopped) == (2, 0, None, False)

    with tarfile.open(tmp_path / "jobs/seed/output/model.tar.gz") as tar:
        tar.extractall(tmp_path / "model", filter="data")
    report = tmp_path / "evaluation.json"
    assert evaluate.main(["--model-dir", str(tmp_path / "model"), "--data", str(seed_dataset / "test"),
                          "--report", str(report), "--gallery", str(tmp_path / "errors.png")]) == 0
    assert json.loads(report.read_text())["examples"] == 90


def test_train_without_a_validation_split(seed_dataset, tmp_path, capsys):
    """`train` with local flags on the same dataset: the --validation folder does not exist and is not read."""
    from trainer import train

    argv = ["--train", str(seed_dataset / "train"), "--validation", str(seed_dataset / "validation"),
            "--model-dir", str(tmp_path / "model"), "--checkpoint-dir", str(tmp_path / "checkpoints"),
            "--output-data-dir", str(tmp_path / "output"), "--scale", "1", "--batch-size", "30", "--epochs", "1"]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "training on 90 examples (" in out and "), no validation; 1 host(s)" in out
    assert NO_VALIDATION in out and (tmp_path / "model/1/saved_model.pb").exists()


def test_validation_rounds_add_a_validation_split(make_dataset):
    root = make_dataset(*SEED_STYLE, "--validation-rounds", "2")
    manifest = json.loads((root / "dataset.json").read_text())
    assert {split: info["examples"] for split, info in manifest["splits"].items()} == \
        {"train": 90, "validation": 180, "test": 90}
    assert manifest["options"]["validation_rounds"] == 2


@pytest.mark.parametrize("flags, message", [
    (("--validation-rounds", "1"), "error: --validation-rounds needs --permutations (-n)\n"),
    (("-n", "1", "--validation-rounds", "-1"), "error: --validation-rounds: must be at least 0 (got -1)\n"),
])
def test_validation_rounds_are_checked(tmp_path, capsys, flags, message):
    from beam_jobs import generate

    assert generate.main(["--output", str(tmp_path / "out"), "-d", "--npi", "2", *flags]) == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "out").exists()
