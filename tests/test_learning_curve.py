"""The learning curve: every training run writes learning_curve.png and the per-epoch values it draws
(learning_curve.json) into the output data dir (else the model dir); a resumed run continues its curve; `launch local` names it
and it travels in output.tar.gz."""
import io
import json
import tarfile

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _epochs(folder):
    return [entry["epoch"] for entry in json.loads((folder / "learning_curve.json").read_text())["epochs"]]


def test_one_entry_per_epoch_and_a_resumed_run_continues(tmp_path):
    from trainer import curves

    for epoch in range(3):
        curves.record(str(tmp_path), epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 1.5, "sequence_accuracy": 0.1 * epoch})
    assert _epochs(tmp_path) == [1, 2, 3]
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == PNG_SIGNATURE
    curves.record(str(tmp_path), 1, {"loss": 0.4})  # resumed after its first epoch: epoch 2 again
    assert _epochs(tmp_path) == [1, 2] and curves.read(str(tmp_path))[1] == {"epoch": 2, "loss": 0.4}
    curves.record(str(tmp_path), 0, {"loss": 0.9})  # a new run into the same folder
    assert _epochs(tmp_path) == [1]


@pytest.mark.parametrize("output_data_dir", [True, False], ids=["output-data-dir", "model-dir"])
def test_every_training_run_writes_its_curve(learnable_dataset, train_args, tmp_path, output_data_dir):
    """Into --output-data-dir when given, else into --model-dir beside the export."""
    from trainer import train

    argv = train_args(str(learnable_dataset), str(tmp_path), "--epochs", "2")
    if not output_data_dir:
        at = argv.index("--output-data-dir")
        del argv[at:at + 2]
    assert train.main(argv) == 0
    output = tmp_path / ("output" if output_data_dir else "model")
    assert (tmp_path / "output").exists() == output_data_dir
    entries = json.loads((output / "learning_curve.json").read_text())["epochs"]
    assert [e["epoch"] for e in entries] == [1, 2]
    assert {"loss", "sequence_accuracy", "val_loss", "val_sequence_accuracy"} <= set(entries[0])
    assert (output / "learning_curve.png").read_bytes()[:8] == PNG_SIGNATURE


def test_launch_local_names_the_curve_in_output_tar(tiny_dataset, tmp_path, capsys):
    from launch import local

    assert local.main([str(tiny_dataset), "--output-path", str(tmp_path / "jobs"), "--job-name", "curve",
                       "--input-mode", "File", "--hp", "epochs=2", "--hp", "batch-size=32"]) == 0
    tarball = tmp_path / "jobs/curve/output/output.tar.gz"
    assert f"learning curve: learning_curve.png in {tarball}" in capsys.readouterr().out
    with tarfile.open(tarball) as tar:
        assert tar.extractfile("learning_curve.png").read()[:8] == PNG_SIGNATURE
        entries = json.load(io.TextIOWrapper(tar.extractfile("learning_curve.json")))["epochs"]
    assert [e["epoch"] for e in entries] == [1, 2]
