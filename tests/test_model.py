import os
import string
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfrecord.spec import CaptchaSpec
from trainer import metric_lines, metrics, model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_softmax_per_position_on_uint8_pixels():
    spec = CaptchaSpec(alphabet="abc", length=3, width=60, height=24, mode="RGB")
    net = model.build_model(spec, scale=0.5, head="per-position")
    assert net.inputs[0].dtype == "uint8" and tuple(net.inputs[0].shape) == (None, 24, 60, 3)
    out = np.asarray(net(np.random.randint(0, 256, (2, 24, 60, 3)).astype("uint8")))
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out.sum(axis=-1), 1, rtol=1e-5)


def test_62_classes_by_6_positions():
    spec = CaptchaSpec(alphabet=string.digits + string.ascii_letters, length=6)  # 160x100
    net = model.build_model(spec, head="per-position")
    out = np.asarray(net(np.zeros((2, 100, 160, 1), "uint8")))
    assert out.shape == (2, 6, 62)
    np.testing.assert_allclose(out.sum(axis=-1), 1, rtol=1e-5)
    assert net.count_params() < 2_500_000  # the last map is 10x6x96 at the working size 80x50


def test_resizing_only_when_the_stored_size_is_not_the_working_size():
    from PIL import Image

    from beam_jobs.render import Renderer

    png = CaptchaSpec(length=4)  # stored at the render size 120x100
    raw = CaptchaSpec(length=4, image_format="raw", store_width=60, store_height=50)
    layers = lambda net: [layer.name for layer in net.layers]  # noqa: E731
    assert "resize" in layers(model.build_model(png, scale=0.5)) and "resize" not in layers(model.build_model(png, scale=1))
    assert "resize" not in layers(model.build_model(raw, scale=0.5)) and "resize" in layers(model.build_model(raw, scale=1))
    # PNG 120x100 resized in the model reaches the convolutions as raw 60x50 does (to PIL's rounding: 1 level)
    net = model.build_model(png, scale=0.5)
    resized = keras.Model(net.inputs, net.get_layer("resize").output)
    image = Renderer(png).image("0907", 3)
    ours = np.asarray(resized([np.asarray(image)[None, :, :, None]]))[0, :, :, 0]
    stored = np.asarray(image.resize((60, 50), Image.BOX)) / 255
    assert np.abs(ours - stored).max() <= 1 / 255 + 1e-6


ON_JAX = """
import sys
import numpy as np
import keras
from tfrecord.spec import CaptchaSpec
from trainer import model

spec = CaptchaSpec(alphabet="abc", length=3, width=60, height=24)
net = model.build_model(spec, scale=0.5, head="per-position")  # the CTC head on JAX: tests/test_ctc.py
net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
images = np.random.default_rng(0).integers(0, 256, (4, 24, 60, 1)).astype("uint8")
probabilities = np.asarray(net(images))
loss = float(net.train_on_batch(images, np.zeros((4, 3), "int32")))
print(keras.backend.backend(), probabilities.shape, bool(np.allclose(probabilities.sum(-1), 1, atol=1e-5)),
      bool(np.isfinite(loss)), "tensorflow" in sys.modules)
"""


@pytest.mark.timeout(180)
def test_the_model_builds_predicts_and_trains_on_the_jax_backend():
    """trainer/model.py on Keras's JAX backend in a fresh process (CPU): TensorFlow is never imported."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", ON_JAX], cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "jax (4, 3, 3) True True False", done.stdout + done.stderr


def test_metrics():
    truth = np.array([[0, 1], [1, 1]])
    pred = np.eye(2)[[[0, 1], [0, 1]]].astype("float32")  # second example has one wrong character
    assert np.allclose(metrics.char_accuracy(truth, pred), [1, 0.5])
    assert np.allclose(metrics.sequence_accuracy(truth, pred), [1, 0])


def test_metric_lines_match_definitions():
    import re

    line = metric_lines.metric_line(3, {"loss": 0.5, "val_sequence_accuracy": 0.25, "examples_per_sec": 812.34})
    assert line == "epoch=3 loss=0.5000 val_sequence_accuracy=0.2500 examples_per_sec=812.3"
    found = {d["Name"]: re.search(d["Regex"], line) for d in metric_lines.METRIC_DEFINITIONS}
    assert found["val_sequence_accuracy"].group(1) == "0.2500" and found["loss"].group(1) == "0.5000"
    assert found["epoch"].group(1) == "3" and found["sequence_accuracy"] is None
