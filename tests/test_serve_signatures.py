"""`serve` honours TF Serving's `signature_name` (serving_default, serving_pixels) and answers an unknown one as
TF Serving does; under ordinary concurrency it writes summary lines, not a line per request."""
import base64
import concurrent.futures
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import requests

from beam_jobs.render import Renderer
from tfrecord.spec import CaptchaSpec

SPEC = CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24)  # tiny_model's spec
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def client(tiny_model):
    from trainer import serve

    return serve.create_app(str(tiny_model)).test_client()


@pytest.fixture(scope="module")
def captcha():
    """(PNG bytes, the same image's uint8 pixels [24, 40, 1]) of one captcha."""
    import tensorflow as tf

    png = Renderer(SPEC).render("42", 1)
    return png, tf.io.decode_png(png, channels=1).numpy()


def test_serving_pixels_answers_as_serving_default_does(client, captcha):
    png, pixels = captcha
    b64 = {"b64": base64.b64encode(png).decode()}
    by_bytes = client.post("/invocations", json={"signature_name": "serving_default", "instances": [b64]})
    assert by_bytes.status_code == 200
    for instance in (pixels.tolist(), {"pixels": pixels.tolist()}):  # TF Serving's row format, plain and named
        by_pixels = client.post("/invocations", json={"signature_name": "serving_pixels", "instances": [instance] * 2})
        assert by_pixels.status_code == 200 and len(by_pixels.json["predictions"]) == 2
        [ours, again] = by_pixels.json["predictions"]
        [theirs] = by_bytes.json["predictions"]
        assert ours == again and ours["text"] == theirs["text"]
        np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=1e-5)


def test_an_unknown_signature_is_a_400_in_tf_servings_words(client, captcha):
    b64 = {"b64": base64.b64encode(captcha[0]).decode()}
    for name in ("serving_nope", "", 7):
        r = client.post("/invocations", json={"signature_name": name, "instances": [b64]})
        assert r.status_code == 400
        assert r.json == {"error": f'Serving signature name: "{name}" not found in signature def'}


@pytest.mark.parametrize("instance", [
    np.zeros((24, 40), int).tolist(),  # no channel axis
    np.zeros((24, 41, 1), int).tolist(),
    np.full((24, 40, 1), 256).tolist(),
    np.full((24, 40, 1), -1).tolist(),
    np.full((24, 40, 1), 0.5).tolist(),
    [[[0]] * 40] * 23 + [[[0]] * 39],  # ragged
    {"b64": "aGVsbG8="},
])
def test_pixels_of_the_wrong_shape_or_kind_are_a_400(client, instance):
    r = client.post("/invocations", json={"signature_name": "serving_pixels", "instances": [instance]})
    assert r.status_code == 400
    assert r.json == {"error": "instance 0: expected 24x40x1 integers 0-255 (serving_pixels takes uint8[B, 24, 40, 1])"}


def test_pixels_sent_to_serving_default_are_refused(client, captcha):
    r = client.post("/invocations", json={"instances": [captcha[1].tolist()]})
    assert r.status_code == 400 and r.json["error"].startswith('instance 0: expected {"b64"')


@pytest.mark.timeout(180, func_only=True)
def test_concurrent_requests_give_summary_lines_not_one_per_request(tiny_model, free_port, captcha):
    """8 clients x 50 requests on 2 server threads (so requests queue): waitress's "Task queue depth" is not
    printed; at the end (SIGTERM) one summary line counts exactly what was answered."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trainer.serve", str(tiny_model), "--port", str(port),
                             "--threads", "2", "--log-interval", "3600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().startswith("serving ")  # printed once listening with the model loaded
        url = f"http://127.0.0.1:{port}/invocations"

        def client(i):
            with requests.Session() as session:
                return [session.post(url, data=captcha[0] if (i + j) % 10 else b"nope",
                                     headers={"Content-Type": "image/png"}, timeout=60).status_code
                        for j in range(50)]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = [status for statuses in pool.map(client, range(8)) for status in statuses]
        assert sorted(set(statuses)) == [200, 400] and statuses.count(400) == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "Task queue depth" not in err
    [line] = err.splitlines()
    assert line.startswith("served 400 requests in ") and ": 360 ok, 40 4xx, 0 5xx; mean " in line


def test_the_summary_counts_outcomes_and_the_deepest_queue():
    import logging

    from trainer import serve

    summary = serve.Summary()
    assert summary.line() is None  # nothing answered: no line
    for status in (200, 200, 400, 413, 500):
        summary.request(status, 0.010)
    summary.handle(logging.makeLogRecord({"msg": "Task queue depth is %d", "args": (3,)}))
    summary.handle(logging.makeLogRecord({"msg": "Task queue depth is %d", "args": (1,)}))
    line = summary.line()
    assert line.startswith("served 5 requests in ")
    assert line.endswith(": 2 ok, 2 4xx, 1 5xx; mean 10 ms, max 10 ms; queue depth up to 3")
    assert summary.line() is None  # a new period
