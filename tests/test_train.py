"""The training entry point: spec checks, resume after a kill, SageMaker Pipe mode through real FIFOs."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from trainer_data import TINY, train_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(make_dataset):
    return str(make_dataset(*TINY))


def test_spec_mismatch_is_refused(data, tmp_path, capsys):
    from trainer import train

    assert train.main(train_args(data, str(tmp_path), "--length", "3", "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert err == "error: model spec does not match the dataset's (model vs data): length 3 vs 2\n"
    assert not (tmp_path / "model").exists()


def test_missing_manifest_is_refused(tmp_path, capsys):
    from trainer import train

    (tmp_path / "train").mkdir()
    assert train.main(train_args(str(tmp_path), str(tmp_path / "out"))) == 2
    assert "no dataset.json" in capsys.readouterr().err


def _train(data, out, epochs):
    return subprocess.Popen([sys.executable, "-m", "trainer.train", *train_args(data, out, "--epochs", str(epochs))],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resumes_from_latest_checkpoint_after_kill(data, tmp_path):
    out = str(tmp_path)
    metadata = tmp_path / "checkpoints/training_metadata.json"
    run = _train(data, out, 50)
    deadline = time.monotonic() + 120
    while not (metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2):
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = json.loads(metadata.read_text())["epoch"]
    assert not (tmp_path / "model/1").exists()

    rerun = _train(data, out, done + 2)
    output = rerun.communicate(timeout=120)[0]
    assert rerun.returncode == 0, output
    epochs = [int(line.split()[0].split("=")[1]) for line in output.splitlines() if line.startswith("epoch=")]
    assert epochs == [done + 1, done + 2], output
    assert (tmp_path / "model/1/saved_model.pb").exists()


def _serve_pipes(data_dir, data, channels, epochs, stop):
    """Play the SageMaker agent: per epoch and channel, a FIFO `<channel>_<epoch>` streaming the shards."""
    for epoch in range(epochs):
        for name, split in channels:
            fifo = os.path.join(data_dir, f"{name}_{epoch}")
            os.mkfifo(fifo)
            fd = None
            while fd is None and not stop.is_set():
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # no reader yet
                    time.sleep(0.05)
            if fd is None:
                return
            os.set_blocking(fd, True)
            with os.fdopen(fd, "wb") as pipe:
                for shard in sorted(os.listdir(os.path.join(data, split))):
                    with open(os.path.join(data, split, shard), "rb") as f:
                        pipe.write(f.read())


def test_pipe_mode_training_through_fifos(data, tmp_path, monkeypatch):
    pytest.importorskip("tfrecord.pipe")
    from trainer import train

    root = tmp_path / "opt_ml"
    config, data_dir = root / "input/config", root / "input/data"
    config.mkdir(parents=True)
    (data_dir / "meta").mkdir(parents=True)
    (data_dir / "meta/dataset.json").write_text(open(os.path.join(data, "dataset.json")).read())
    pipe = {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    (config / "inputdataconfig.json").write_text(json.dumps({
        "train": pipe, "validation": pipe, "meta": dict(pipe, TrainingInputMode="File")}))
    monkeypatch.setenv("CAPTCHA_PIPELINE_OPT_ML", str(root))
    epochs, stop = 3, threading.Event()
    writer = threading.Thread(target=_serve_pipes, daemon=True,
                              args=(str(data_dir), data, [("train", "train"), ("validation", "validation")], epochs, stop))
    writer.start()
    try:
        assert train.main(["--epochs", str(epochs), "--scale", "1", "--batch-size", "32"]) == 0
    finally:
        stop.set()
        writer.join(timeout=10)
    assert (root / "model/1/saved_model.pb").exists()
    assert (root / "checkpoints/training_metadata.json").exists()
