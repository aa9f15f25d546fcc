"""Fault injection, S3: an endpoint that is down (a closed loopback port). Every command that talks to S3
says so in one line and exits 2 within seconds (bounded connect timeout and attempts), writing nothing."""
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND_S = 20  # seconds, interpreter start-up included


@pytest.fixture
def down(free_port):
    """The URL of a loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def run(argv, tmp_path, **env):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "launch.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path), **env}, timeout=120)
    return proc, time.monotonic() - start


def assert_one_line(proc, seconds, endpoint):
    assert proc.returncode == 2, proc.stderr
    # `import apache_beam` itself logs one warning about GCP client libraries; that line is Beam's, not ours
    lines = [line for line in proc.stderr.splitlines() if "apitools not found" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"endpoint {endpoint[len('http://'):]} not reachable" in lines[0]
    assert seconds < BOUND_S


@pytest.mark.timeout(60)
def test_generate(down, tmp_path):
    proc, seconds = run(["generate", "--output", "s3://bucket/data", "-d", "--train-examples", "4",
                         "--validation-examples", "0", "--test-examples", "0", "--s3_endpoint_url", down], tmp_path)
    assert_one_line(proc, seconds, down)
    assert "output s3://bucket/data: bucket 'bucket' is not accessible" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["flag", "AWS_ENDPOINT_URL"])
def test_inspect(down, tmp_path, how):
    sheet = tmp_path / "sheet.png"
    flags = ["--s3_endpoint_url", down] if how == "flag" else []
    proc, seconds = run(["inspect", "s3://bucket/data", "--contact-sheet", str(sheet), *flags], tmp_path,
                        **({"AWS_ENDPOINT_URL": down} if how != "flag" else {}))
    assert_one_line(proc, seconds, down)
    assert "s3://bucket/data/dataset.json: " in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.timeout(60)
def test_launch_local(down, tmp_path):
    out = tmp_path / "jobs"
    proc, seconds = run(["launch", "local", "s3://bucket/data", "--output-path", str(out), "--job-name", "j"],
                        tmp_path, AWS_ENDPOINT_URL=down)
    assert_one_line(proc, seconds, down)
    assert os.listdir(tmp_path) == []  # no output, no container root left behind
