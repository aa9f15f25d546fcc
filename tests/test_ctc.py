"""The CTC head and the per-position head's "end" class: decoding in the graph, the loss, the metrics, the
exported signatures and the saved Keras model."""
import inspect

import keras
import numpy as np
import pytest

from tfrecord.spec import CaptchaSpec
from trainer import metrics, model


def _one_hot(path, classes, p=0.9):
    """Probabilities [1, steps, classes] putting `p` on each step's class of `path`."""
    out = np.full((1, len(path), classes), (1 - p) / (classes - 1), "float32")
    out[0, np.arange(len(path)), path] = p
    return out


def test_greedy_ctc_decoding_merges_repeats_and_drops_blanks():
    blank = 3  # alphabet "abc", blank last
    probabilities = _one_hot([0, 0, blank, 0, 1, blank, 2, 2], 4)
    indices, confidence = model.decode(probabilities, "ctc", blank)
    assert np.asarray(indices).tolist() == [[0, 0, 1, 2, blank, blank, blank, blank]]
    np.testing.assert_allclose(np.asarray(confidence), [0.9 ** 8], rtol=1e-5)


def test_per_position_end_class_ends_the_text():
    end = 3
    indices, confidence = model.decode(_one_hot([1, 2, end, 0, end], 4), "per-position", end)
    assert np.asarray(indices).tolist() == [[1, 2, end, end, end]]
    indices, _ = model.decode(_one_hot([1, 2, 0], 3), "per-position", None)  # a fixed length: every position
    assert np.asarray(indices).tolist() == [[1, 2, 0]]


def test_ctc_model_shapes_and_backend_neutral_source():
    spec = CaptchaSpec(length=4)  # 120x100, 60x50 at scale 0.5
    net = model.build_model(spec, head="ctc")
    out = np.asarray(net(np.zeros((2, 100, 120, 1), "uint8")))
    assert out.shape == (2, 15, 11)  # 60 / 4 columns; 10 digits and the blank
    np.testing.assert_allclose(out.sum(axis=-1), 1, rtol=1e-5)
    assert model.head_of(net) == ("ctc", 10)
    assert model.head_of(model.build_model(spec)) == ("ctc", 10)  # the default head
    assert model.head_of(model.build_model(spec, head="per-position")) == ("per-position", None)
    assert model.head_of(model.build_model(CaptchaSpec(length=4, min_length=3), head="per-position")) == ("per-position", 10)
    for module in (model, metrics):
        assert "tensorflow" not in inspect.getsource(module) and "tf." not in inspect.getsource(module)
    with pytest.raises(ValueError, match="head must be one of"):
        model.build_model(spec, head="attention")


def test_ctc_loss_prefers_the_right_labels_and_metrics_read_the_path():
    pad = 3
    probabilities = _one_hot([0, pad, 1, 1, pad, 2, pad, pad], 4)  # reads "abc"
    loss = model.CTCLoss(pad)
    right, wrong = (float(loss(np.array([labels]), probabilities)) for labels in ([0, 1, 2, pad], [2, 1, 0, pad]))
    assert np.isfinite(right) and right < wrong
    assert metrics.sequence_accuracy(np.array([[0, 1, 2, pad]]), probabilities, "ctc", pad).numpy().tolist() == [1]
    assert metrics.sequence_accuracy(np.array([[0, 1, pad, pad]]), probabilities, "ctc", pad).numpy().tolist() == [0]
    assert metrics.char_accuracy(np.array([[0, 1, 0, pad]]), probabilities, "ctc", pad).numpy().tolist() == [0.75]


def test_ctc_export_signatures_and_saved_keras_model(tmp_path, tiny_spec):
    import tensorflow as tf

    from trainer import export

    net = model.compile_model(model.build_model(tiny_spec, scale=1, head="ctc"), 1e-3)
    net.optimizer.build(net.trainable_variables)  # as after training: the saved optimizer loads back whole
    export.export(net, tiny_spec, str(tmp_path / "m"))
    loaded, spec = export.load(str(tmp_path / "m"))
    out = loaded.signatures["serving_pixels"](pixels=tf.zeros([3, *spec.input_shape], tf.uint8))
    assert out["probabilities"].shape[-1] == 11 and out["text"].shape == (3,)
    assert all(set(t.decode()) <= set(spec.alphabet) for t in out["text"].numpy())
    assert ((0 <= out["confidence"].numpy()) & (out["confidence"].numpy() <= 1)).all()
    again = keras.saving.load_model(str(tmp_path / "m/model.keras"))
    assert model.head_of(again) == ("ctc", 10) and isinstance(again.loss, model.CTCLoss)


ON_JAX = """
import numpy as np
import keras
from tfrecord.spec import CaptchaSpec
from trainer import model

spec = CaptchaSpec(alphabet="abc", length=3, min_length=2, width=60, height=24)
net = model.compile_model(model.build_model(spec, scale=1, head="ctc"), 1e-3)
images = np.random.default_rng(0).integers(0, 256, (4, 24, 60, 1)).astype("uint8")
labels = np.array([[0, 1, 2], [1, 2, 3], [2, 2, 0], [0, 0, 3]], "int32")  # 3: past the label's end
logs = net.train_on_batch(images, labels, return_dict=True)
indices, confidence = model.decode(net(images), *model.head_of(net))
print(keras.backend.backend(), tuple(np.asarray(indices).shape), bool(np.isfinite(logs["loss"])), sorted(logs))
"""


@pytest.mark.timeout(180)
def test_the_ctc_head_trains_and_decodes_on_the_jax_backend():
    """The CTC head, its loss, metrics and decoding on Keras's JAX backend in a fresh process. (Keras's own
    Bidirectional layer imports TensorFlow where it is installed, to serialise its config; nothing of it runs.)"""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", ON_JAX], cwd=repo, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "jax (4, 15) True ['char_accuracy', 'loss', 'sequence_accuracy']", \
        done.stdout + done.stderr


def test_resuming_with_another_head_is_one_line(learnable_dataset, train_args, tmp_path, capsys):
    from trainer import train

    assert train.main(train_args(str(learnable_dataset), str(tmp_path), "--epochs", "1")) == 0  # the default, ctc
    capsys.readouterr()
    assert train.main(train_args(str(learnable_dataset), str(tmp_path), "--epochs", "2", "--head", "per-position")) == 2
    assert capsys.readouterr().err == (
        f"error: checkpoint dir {tmp_path}/checkpoints holds a model of another architecture (another --head, --scale "
        "or spec): use an empty checkpoint dir, or the flags it was trained with\n")
