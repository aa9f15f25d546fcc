"""Shared fixtures: a real S3-protocol server on loopback (moto standalone, as a subprocess)."""
import os
import socket
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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _default_storage_settings():
    """S3 settings a command configured (e.g. from --s3_endpoint_url) end with the test."""
    yield
    from tfrecord import storage

    storage.configure({})


@pytest.fixture(scope="session")
def aws_server():
    """moto's standalone server (S3, SageMaker, ...) on 127.0.0.1; `.url` is the endpoint URL."""
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
    yield types.SimpleNamespace(url=url, port=port)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3(aws_server):
    """A boto3 S3 client on the loopback server, and a fresh bucket name for this test."""
    import boto3
    import uuid

    client = boto3.client("s3", endpoint_url=aws_server.url, region_name="us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return types.SimpleNamespace(client=client, bucket=bucket, url=aws_server.url)


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory):
    """make_dataset(*generate_argv) -> Path of a dataset written by the Beam job (in-process DirectRunner), cached per argv."""
    from beam_jobs import generate

    cache = {}

    def make(*argv):
        if argv not in cache:
            out = tmp_path_factory.mktemp("dataset")
            generate.run(["--output", str(out), *argv])
            cache[argv] = out
        return cache[argv]

    return make


TINY = ("-d", "--length", "2", "--width", "40", "--height", "24", "--train-examples", "120",
        "--validation-examples", "32", "--test-examples", "32", "--num-shards", "3", "--holdout-labels")


@pytest.fixture(scope="session")
def tiny_dataset(make_dataset):
    """A small digits dataset (length 2, 40x24 grayscale): train 120, validation 32, test 32, 3 shards each."""
    return make_dataset(*TINY)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_dataset):
    """A model trained for one epoch on tiny_dataset and exported: its model dir (for predict and serve)."""
    from trainer import train
    from trainer_data import train_args

    out = tmp_path_factory.mktemp("tiny-model")
    assert train.main(train_args(tiny_dataset, out, "--epochs", "1")) == 0
    return out / "model"


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
        proc.wait(timeout=10)


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
