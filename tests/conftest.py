"""Shared fixtures: a real S3-protocol server on loopback (moto standalone, as a subprocess), datasets
written by the Beam job, and helpers every test file may use (free ports, uploads, train flags, the labels or the error a
dataset yields, predictions from a SavedModel here or in a fresh interpreter)."""
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import types
import urllib.request

import pytest

# No test may reach AWS: dummy credentials, no shared config files, a fixed region, the SageMaker SDK's
# telemetry off, and any HTTP(S) request that is not for loopback sent to a closed loopback port.
SAGEMAKER_CONFIG = os.path.join(os.path.dirname(__file__), "sagemaker_config.yaml")
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
    "SAGEMAKER_USER_CONFIG_OVERRIDE": SAGEMAKER_CONFIG, "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": SAGEMAKER_CONFIG,
    "SAGEMAKER_VALIDATE_ROLE": "false",  # moto has no iam:SimulatePrincipalPolicy
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    "TF_CPP_MIN_LOG_LEVEL": "2",
})


# The files whose tests take longest run first, so that with pytest-xdist (`make test`: one file per worker at a
# time, in this order) the workers finish together.
SLOWEST_FIRST = ("test_multihost.py", "test_train.py", "test_export.py", "test_launch_local.py", "test_generate.py",
                 "test_variable_length.py", "test_bench_accuracy.py", "test_launch_train.py", "test_storage.py",
                 "test_faults_http.py", "test_serve.py",
                 "test_model.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    order = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))


def _free_port():
    from launch.local import free_ports

    return free_ports(1)[0]


@pytest.fixture(autouse=True)
def _default_storage_settings():
    """S3 settings a command configured (e.g. from --s3_endpoint_url) end with the test."""
    yield
    from tfrecord import storage

    storage.configure({})


@pytest.fixture(scope="session")
def free_port():
    """free_port() -> a loopback TCP port nobody listens on right now."""
    return _free_port


def _start_aws_server():
    """moto's standalone server (S3, SageMaker, ...) on a free loopback port, started: a namespace with
    `.url` (the endpoint URL), `.port` and `.process`."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.2)
    return types.SimpleNamespace(url=url, port=port, process=proc)


@pytest.fixture(scope="session")
def aws_server():
    """moto's standalone server (S3, SageMaker, ...) on 127.0.0.1; `.url` is the endpoint URL."""
    server = _start_aws_server()
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
def own_aws_server():
    """A moto server for this test alone, which the test may kill (`.process`); ended with the test."""
    server = _start_aws_server()
    yield server
    server.process.kill()
    server.process.wait(timeout=10)


@pytest.fixture
def s3(aws_server):
    """A boto3 S3 client on the loopback server, and a fresh bucket name for this test."""
    import boto3
    import uuid

    client = boto3.client("s3", endpoint_url=aws_server.url, region_name="us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return types.SimpleNamespace(client=client, bucket=bucket, url=aws_server.url)


@pytest.fixture
def upload(s3):
    """upload(folder, prefix="data") -> s3:// URI of a copy of the local folder in the test's bucket."""

    def upload(folder, prefix="data"):
        for dirpath, _, files in os.walk(folder):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), folder)
                s3.client.upload_file(os.path.join(dirpath, f), s3.bucket, f"{prefix}/{rel}")
        return f"s3://{s3.bucket}/{prefix}"

    return upload


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory):
    """make_dataset(*generate_argv) -> Path of a dataset written by the Beam job (in-process DirectRunner), cached
    per argv; its progress bar and closing line are not part of the test's output."""
    from beam_jobs import generate

    cache = {}

    def make(*argv):
        if argv not in cache:
            out = tmp_path_factory.mktemp("dataset")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                generate.run(["--output", str(out), *argv])  # quietly: the test's own output is what it checks
            cache[argv] = out
        return cache[argv]

    return make


TINY = ("-d", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "120",
        "--validation-examples", "32", "--test-examples", "32", "--num-shards", "3", "--holdout-labels")
# 4 label strings, so a few epochs on 256 images learn them well above chance (0.25)
LEARNABLE = ("--chars", "01", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "256",
             "--validation-examples", "64", "--test-examples", "64", "--num-shards", "2")


@pytest.fixture(scope="session")
def tiny_dataset(make_dataset):
    """A small digits dataset (length 2, 40x24 grayscale): train 120, validation 32, test 32, 3 shards each."""
    return make_dataset(*TINY)


@pytest.fixture(scope="session")
def tiny_spec():
    """The spec `tiny_dataset` is made with."""
    from tfrecord.spec import CaptchaSpec

    return CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24)


@pytest.fixture(scope="session")
def learnable_dataset(make_dataset):
    """A dataset a tiny model learns in a few epochs: alphabet "01", length 2, 40x24 grayscale; train 256,
    validation 64, test 64, 2 shards each."""
    return make_dataset(*LEARNABLE)


@pytest.fixture(scope="session")
def learnable_spec():
    """The spec `learnable_dataset` is made with."""
    from tfrecord.spec import CaptchaSpec

    return CaptchaSpec(alphabet="01", length=2, width=40, height=24)


@pytest.fixture(scope="session")
def train_args():
    """train_args(root, out, *extra) -> flags for `trainer.train.main` on the dataset at `root`, writing under `out`."""

    def args(root, out, *extra):
        return ["--train", f"{root}/train", "--validation", f"{root}/validation", "--model-dir", f"{out}/model",
                "--checkpoint-dir", f"{out}/checkpoints", "--output-data-dir", f"{out}/output",
                "--scale", "1", "--batch-size", "32", "--learning-rate", "0.01", "--patience", "20", *extra]

    return args


@pytest.fixture(scope="session")
def labels():
    """labels(ds) -> every label of every batch of a tf.data dataset, in order, as tuples."""

    def labels(ds):
        return [tuple(row) for _, y in ds for row in y.numpy().tolist()]

    return labels


@pytest.fixture(scope="session")
def first_error():
    """first_error(ds) -> the message of the error that iterating `ds` raises (a UserError's line when it
    carries one)."""
    from tfrecord.errors import embedded_user_error

    def first_error(ds):
        with pytest.raises(Exception) as info:
            for _ in ds:
                pass
        return embedded_user_error(info.value) or str(info.value)

    return first_error


def _serving_default(model_dir, images):
    """(texts, probabilities) from the SavedModel's serving_default signature for PNG bytes."""
    import tensorflow as tf

    from trainer import export

    model, _ = export.load(model_dir)
    out = model.signatures["serving_default"](image_bytes=tf.constant(images))
    return [t.decode() for t in out["text"].numpy()], out["probabilities"].numpy().tolist()


@pytest.fixture(scope="session")
def serving_predictions():
    """serving_predictions(model_dir, images, fresh_process=False) -> (texts, probabilities) of the
    SavedModel's default signature, in this process or in a fresh interpreter."""

    def predict(model_dir, images, fresh_process=False):
        if not fresh_process:
            return _serving_default(model_dir, images)
        code = ("import json, sys; sys.path.insert(0, 'tests'); from conftest import _serving_default; "
                "print(json.dumps(_serving_default(sys.argv[1], [bytes.fromhex(h) for h in sys.argv[2:]])))")
        proc = subprocess.run([sys.executable, "-c", code, model_dir, *[i.hex() for i in images]], capture_output=True,
                              text=True, check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))

    return predict


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_spec):
    """An untrained model for tiny_dataset's spec, exported: its model dir. What predict, serve and the
    signatures do around a model does not depend on what it learned. The per-position head: its text is
    always the spec's length, which the tests of that plumbing count (tests/test_ctc.py exports the CTC head)."""
    from trainer import export
    from trainer.model import build_model

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    export.export(build_model(tiny_spec, scale=1, head="per-position"), tiny_spec, str(out))
    return out


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """start_server(model_dir, *flags) -> (url, process) of `serve` in a fresh process once it answers /ping;
    each is stopped after the module."""
    import requests

    started = []

    def start(model_dir, *flags):
        port, log = _free_port(), tmp_path_factory.mktemp("serve") / "stderr"
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "trainer.serve", str(model_dir), "--port", str(port), *flags],
                                stdout=subprocess.DEVNULL, stderr=log.open("w"))
        started.append(proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    return url, proc
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=60)  # TensorFlow's teardown on a loaded machine takes its time


@pytest.fixture(scope="session")
def png_bomb():
    """A 388 KB PNG of 20000x20000 zero pixels: 400 MB once decoded."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = zlib.compressobj(9)
    pixels = b"".join(rows.compress(b"\0" * 20001) for _ in range(20000)) + rows.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
