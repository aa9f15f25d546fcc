"""The training entry point: argument and spec checks, resume after a kill, a checkpoint of other data,
several devices, mixed precision, SageMaker Pipe mode through real FIFOs."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(learnable_dataset):
    return str(learnable_dataset)


def test_spec_mismatch_is_refused(data, train_args, tmp_path, capsys):
    from trainer import train

    assert train.main(train_args(data, str(tmp_path), "--length", "3", "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert err == "error: model spec does not match the dataset's (model vs data): length 3 vs 2\n"
    assert not (tmp_path / "model").exists()


def test_missing_manifest_is_refused(train_args, tmp_path, capsys):
    from trainer import train

    (tmp_path / "train").mkdir()
    assert train.main(train_args(str(tmp_path), str(tmp_path / "out"))) == 2
    assert "no dataset.json" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "error: --batch-size: must be at least 1 (got 0)\n"),
    ("--epochs", "0", "error: --epochs: must be at least 1 (got 0)\n"),
    ("--learning-rate", "-0.01", "error: --learning-rate: must be positive (got -0.01)\n"),
    ("--batch-size", "512", "error: --batch-size 512 is larger than the 256 train examples\n"),
])
def test_bad_numbers_are_one_line_errors(data, train_args, tmp_path, capsys, flag, value, message):
    from trainer import train

    assert train.main(train_args(data, str(tmp_path), flag, value)) == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "model").exists()


def _train(train_args, data, out, *flags):
    return subprocess.Popen([sys.executable, "-m", "trainer.train", *train_args(data, out, *flags)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _epochs(output):
    return [int(line.split()[0].split("=")[1]) for line in output.splitlines() if line.startswith("epoch=")]


def test_resumes_from_latest_checkpoint_after_kill(data, train_args, tmp_path, capsys):
    from trainer import checkpoint, train

    out = str(tmp_path)
    run = _train(train_args, data, out, "--epochs", "50")
    deadline = time.monotonic() + 120
    while not getattr(checkpoint.load_progress(tmp_path / "checkpoints"), "epoch", 0) >= 1:
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = checkpoint.load_progress(tmp_path / "checkpoints").epoch
    assert not (tmp_path / "model/1").exists()

    assert train.main(train_args(data, out, "--epochs", str(done + 2))) == 0  # the rerun, in this process
    output = capsys.readouterr().out
    assert _epochs(output) == [done + 1, done + 2], output
    assert (tmp_path / "model/1/saved_model.pb").exists()


def test_early_stopping_ends_training_and_is_remembered(data, train_args, tmp_path, capsys):
    """A model that cannot learn (learning rate 1e-12) stops after --patience epochs without a better
    val_sequence_accuracy; a rerun on the same checkpoint trains no further and exports again."""
    from trainer import checkpoint, train

    args = train_args(data, str(tmp_path), "--epochs", "10", "--learning-rate", "1e-12", "--patience", "1")
    assert train.main(args) == 0
    out = capsys.readouterr().out
    saved = checkpoint.load_progress(tmp_path / "checkpoints")
    assert saved.stopped and saved.wait == 1 and _epochs(out) == list(range(1, saved.epoch + 1)), out
    assert saved.epoch < 10 and f"best epoch {saved.best_epoch + 1}" in out
    assert (tmp_path / "output/tensorboard/train").is_dir() and (tmp_path / "model/1/saved_model.pb").exists()
    assert train.main(args) == 0
    assert _epochs(capsys.readouterr().out) == [] and checkpoint.load_progress(tmp_path / "checkpoints") == saved


def test_checkpoint_of_another_dataset_is_refused(data, train_args, tmp_path, capsys):
    """A finished checkpoint dir reused on other data: one line, exit 2, no model exported from it."""
    from trainer import train

    assert train.main(train_args(data, str(tmp_path / "a"), "--epochs", "1")) == 0
    other = tmp_path / "other"
    shutil.copytree(data, other)
    manifest = json.loads((other / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps(dict(manifest, seed=manifest["seed"] + 1)))
    capsys.readouterr()
    args = train_args(str(other), str(tmp_path / "b"), "--epochs", "1", "--checkpoint-dir", str(tmp_path / "a/checkpoints"))
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint dir {tmp_path / 'a/checkpoints'} holds training on another dataset")
    assert err.count("\n") == 1 and not (tmp_path / "b/model").exists()


def test_the_sigterm_watcher_ends_with_training():
    """After training (no SIGTERM) the watcher thread ends: it must not spin on the closed wake-up pipe."""
    from trainer.sigterm import StopRequest

    before = set(threading.enumerate())
    with StopRequest(10):
        [watcher] = set(threading.enumerate()) - before
    watcher.join(timeout=5)
    assert not watcher.is_alive()


def test_mirrored_strategy_on_two_cpu_devices(data, train_args, tmp_path):
    run = _train(train_args, data, str(tmp_path), "--epochs", "1", "--cpu-devices", "2")
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 0, output
    assert "1 host(s), 2 replica(s), 8 steps of 32 per epoch" in output
    assert _epochs(output) == [1] and "host algo-1: 8 steps, 256 examples over all hosts" in output
    assert (tmp_path / "model/1/saved_model.pb").exists()


@pytest.mark.parametrize("head", ["ctc", "per-position"])
def test_mixed_precision_forced_on_cpu(learnable_spec, head):
    """`--mixed-precision on` without a GPU: training steps of the trainer's own step function (float16 is slow
    on a CPU, so a batch of 8): the dynamic loss scale comes down past a start whose scaled gradients overflow
    (skipped steps: CTC's first losses are large), steps are applied, the loss is finite, probabilities float32."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer import distribute
    from trainer.model import build_model, compile_model

    assert distribute.set_precision("auto") is False  # no GPU here
    try:
        assert distribute.set_precision("on") is True
        model = compile_model(build_model(learnable_spec, scale=1, head=head), 0.01)
        model.optimizer.build(model.trainable_variables)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        images = np.random.default_rng(0).integers(0, 256, (8, *model.input_shape[1:])).astype("uint8")  # what readers yield
        labels = np.zeros((8, learnable_spec.length), "int32")
        batches = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
        step = distribute.step_function(model, tf.distribute.get_strategy())
        for _ in range(20):
            stop, trained = step(batches, tf.constant(0.0)).numpy()
            assert stop == 0 and trained == 8
        assert model.optimizer.iterations.numpy() >= 1
        assert math.isfinite(float(model.get_metrics_result()["loss"]))
        probabilities = model(images)
        assert model.layers[1].compute_dtype == "float16" and probabilities.dtype == "float32"
        assert np.isfinite(probabilities).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_pipe_mode_training_through_fifos(data, tmp_path, monkeypatch):
    """The trainer in a SageMaker container root, its channels fed by the Pipe agent through real FIFOs."""
    from launch import pipe_agent
    from tfrecord import storage
    from trainer import train

    root = tmp_path / "opt_ml"
    config, data_dir = root / "input/config", root / "input/data"
    config.mkdir(parents=True)
    (data_dir / "meta").mkdir(parents=True)
    shutil.copy(os.path.join(data, "dataset.json"), data_dir / "meta")
    pipe = {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None",
            "CompressionType": "None"}
    (config / "inputdataconfig.json").write_text(json.dumps({
        "train": pipe, "validation": pipe, "meta": dict(pipe, TrainingInputMode="File")}))
    monkeypatch.setenv("CAPTCHA_PIPELINE_OPT_ML", str(root))
    stop, errors = threading.Event(), []
    feeders = [threading.Thread(target=pipe_agent.feed_pipe, daemon=True,
                                args=(split, storage.list(os.path.join(data, split)), pipe,
                                      pipe_agent.Progress(), stop, errors)) for split in ("train", "validation")]
    for feeder in feeders:
        feeder.start()
    try:
        assert train.main(["--epochs", "3", "--scale", "1", "--batch-size", "32"]) == 0
    finally:
        stop.set()
        for feeder in feeders:
            feeder.join(timeout=10)
    assert not errors
    assert (root / "model/1/saved_model.pb").exists()
    assert (root / "checkpoints/training_state.npz").exists()
