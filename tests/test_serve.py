"""`serve` over real HTTP (waitress in a fresh process, `requests` as the client), bad requests included;
`launch invoke --url` against it; `launch deploy/delete` against moto's SageMaker API."""
import base64
import socket

import boto3
import pytest
import requests

from beam_jobs.render import Renderer
from launch import endpoints
from tfrecord.spec import CaptchaSpec

SPEC = CaptchaSpec(alphabet="0123456789", length=2, width=40, height=24)


@pytest.fixture(scope="module")
def server(tiny_model, start_server):
    url, _ = start_server(tiny_model, "--max-request-bytes", "100000")
    return url


@pytest.fixture(scope="module")
def png():
    return Renderer(SPEC).render("42", 1)


def test_json_and_raw_bodies(server, png):
    b64 = base64.b64encode(png).decode()
    r = requests.post(f"{server}/invocations", json={"instances": [{"b64": b64}, {"image_bytes": {"b64": b64}}]})
    assert r.status_code == 200
    predictions = r.json()["predictions"]
    assert len(predictions) == 2 and predictions[0]["text"] == predictions[1]["text"]
    p = predictions[0]
    assert len(p["text"]) == 2 and set(p["text"]) <= set(SPEC.alphabet) and 0 <= p["confidence"] <= 1
    assert len(p["probabilities"]) == 2 and len(p["probabilities"][0]) == 10
    raw = requests.post(f"{server}/invocations", data=png, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200
    [q] = raw.json()["predictions"]
    assert q["text"] == p["text"] and q["confidence"] == pytest.approx(p["confidence"], rel=1e-4)


@pytest.mark.parametrize("body, content_type, status, reason", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"instances": []}', "application/json", 400, "at least one instance"),
    (b'{"instances": [{"b64": "%%%"}]}', "application/json", 400, "invalid base64"),
    (b'{"instances": [[0.1, 0.2]]}', "application/json", 400, "instance 0: expected"),
    (b'{"instances": [{"b64": "aGVsbG8="}]}', "application/json", 400, "not a PNG or JPEG"),
    (b"\x89PNG\r\n\x1a\ntruncated", "image/png", 400, "truncated or malformed PNG"),
    (b"hello", "text/plain", 415, "unsupported content type"),
    (b"\x89PNG" + b"0" * 200_000, "image/png", 413, "Request Entity Too Large"),
])
def test_bad_requests_get_4xx_with_a_reason(server, body, content_type, status, reason):
    r = requests.post(f"{server}/invocations", data=body, headers={"Content-Type": content_type})
    assert r.status_code == status and r.headers["Content-Type"] == "application/json"
    assert reason in r.json()["error"]
    assert requests.get(f"{server}/ping").status_code == 200  # still serving


def test_unknown_route(server):
    for r, status in (requests.get(f"{server}/nope"), 404), (requests.get(f"{server}/invocations"), 405):
        assert r.status_code == status and "use GET /ping or POST /invocations" in r.json()["error"]


def test_our_own_faults_are_json_500s(tiny_model, png, monkeypatch):
    from trainer import export, serve

    def broken(*_):
        raise RuntimeError("a bug")

    client = serve.create_app(str(tiny_model)).test_client()
    monkeypatch.setattr(export, "predict_each", broken)
    r = client.post("/invocations", data=png, content_type="image/png")
    assert r.status_code == 500 and r.json == {"error": "internal error: RuntimeError"}


def test_port_out_of_range_or_in_use_is_one_line(tmp_path, capsys):
    from trainer import serve

    assert serve.main([str(tmp_path), "--port", "99999"]) == 2
    assert capsys.readouterr().err == "error: --port: not a TCP port (1-65535) (got 99999)\n"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert serve.main([str(tmp_path), "--port", str(port)]) == 2
    assert capsys.readouterr().err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_invoke_against_local_serve(server, png, tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(png)
    assert endpoints.invoke(["unused", str(image), "--url", server]) == 0
    path, text, confidence = capsys.readouterr().out.strip().split("\t")
    assert path == str(image) and len(text) == 2 and 0 <= float(confidence) <= 1


def test_deploy_and_delete_on_moto(aws_server, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    sm = boto3.client("sagemaker", region_name="us-east-1")
    sm.create_training_job(
        TrainingJobName="served-job", RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "Pipe"},
        OutputDataConfig={"S3OutputPath": "s3://b/jobs"}, StoppingCondition={"MaxRuntimeInSeconds": 60},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1})
    assert endpoints.deploy(["served-job", "--role", "arn:aws:iam::123456789012:role/R",
                           "--endpoint-name", "captcha"]) == 0
    model = sm.describe_model(ModelName="captcha")["PrimaryContainer"]
    assert model["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.20-cpu-py312"
    assert model["ModelDataUrl"] == "s3://b/jobs/served-job/output/model.tar.gz"
    assert sm.describe_endpoint(EndpointName="captcha")["EndpointConfigName"] == "captcha"
    assert endpoints.delete(["captcha"]) == 0
    assert not sm.list_endpoints()["Endpoints"] and not sm.list_models()["Models"]
