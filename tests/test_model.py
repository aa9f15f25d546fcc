import inspect

import numpy as np

from tfrecord.spec import CaptchaSpec
from trainer import metric_lines, metrics, model


def test_one_softmax_per_position():
    spec = CaptchaSpec(alphabet="abc", length=3, width=60, height=24, mode="RGB")
    net = model.build_model(spec, scale=0.5)
    out = np.asarray(net(np.random.rand(2, 24, 60, 3).astype("float32")))
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out.sum(axis=-1), 1, rtol=1e-5)


def test_model_is_backend_agnostic():
    source = inspect.getsource(model)
    assert "tensorflow" not in source and "tf." not in source


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
