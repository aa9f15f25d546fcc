"""Fault injection, S3: an endpoint that is down (a closed loopback port), or one that goes away after the
driver's checks. Every command that talks to S3 says so in one line after its 3 attempts and exits 2,
writing nothing."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def down(free_port):
    """The URL of a loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def run(argv, tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "launch.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path), **env}, timeout=120)


def assert_one_line(proc, endpoint):
    assert proc.returncode == 2, proc.stderr
    # `import apache_beam` itself logs one warning about GCP client libraries; that line is Beam's, not ours
    lines = [line for line in proc.stderr.splitlines() if "apitools not found" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"endpoint {endpoint[len('http://'):]} not reachable (3 attempts)" in lines[0]


@pytest.mark.timeout(60)
def test_generate(down, tmp_path):
    proc = run(["generate", "--output", "s3://bucket/data", "-d", "--train-examples", "4",
                         "--validation-examples", "0", "--test-examples", "0", "--s3_endpoint_url", down], tmp_path)
    assert_one_line(proc, down)
    assert "output s3://bucket/data: bucket 'bucket' is not accessible" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["flag", "AWS_ENDPOINT_URL"])
def test_inspect(down, tmp_path, how):
    sheet = tmp_path / "sheet.png"
    flags = ["--s3_endpoint_url", down] if how == "flag" else []
    proc = run(["inspect", "s3://bucket/data", "--contact-sheet", str(sheet), *flags], tmp_path,
                        **({"AWS_ENDPOINT_URL": down} if how != "flag" else {}))
    assert_one_line(proc, down)
    assert "s3://bucket/data/dataset.json: " in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.timeout(60)
def test_launch_local(down, tmp_path):
    out = tmp_path / "jobs"
    proc = run(["launch", "local", "s3://bucket/data", "--output-path", str(out), "--job-name", "j"],
                        tmp_path, AWS_ENDPOINT_URL=down)
    assert_one_line(proc, down)
    assert os.listdir(tmp_path) == []  # no output, no container root left behind


@pytest.mark.timeout(300)
def test_generate_when_the_endpoint_dies_after_the_drivers_checks(own_aws_server, monkeypatch, capsys):
    """The driver's checks pass; then the endpoint goes away, and the Beam workers (2 processes, which get the
    S3 settings from the DoFns) meet it: one line naming the endpoint, exit 2, no manifest."""
    import boto3

    from beam_jobs import generate, output

    boto3.client("s3", endpoint_url=own_aws_server.url, region_name="us-east-1").create_bucket(Bucket="bucket")
    checked = output.prepare

    def check_then_lose_the_endpoint(*args, **kwargs):
        checked(*args, **kwargs)  # the driver's last look at the output
        own_aws_server.process.kill()
        own_aws_server.process.wait(timeout=10)

    monkeypatch.setattr(output, "prepare", check_then_lose_the_endpoint)
    capsys.readouterr()
    assert generate.main(["--output", "s3://bucket/data", "-d", "--length", "2", "--width", "40", "--height", "24",
                          "--train-examples", "8", "--validation-examples", "0", "--test-examples", "0",
                          "--num-shards", "2", "--s3_endpoint_url", own_aws_server.url,
                          "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("generate: rendered ")]
    assert len(err) == 1 and err[0].startswith("error: s3://bucket/data/train/train-0000"), err  # a shard, by a worker
    assert f"endpoint 127.0.0.1:{own_aws_server.port} not reachable (3 attempts)" in err[0], err
