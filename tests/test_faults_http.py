"""Fault injection, hostile HTTP clients against `serve` in a fresh process on loopback: idle and slow
connections, oversized and deeply nested bodies, decompression bombs, too many instances. Every refusal
is a JSON 4xx, /ping keeps answering, and memory stays bounded."""
import base64
import json
import socket
import time

import pytest
import requests

IDLE_TIMEOUT = 10  # seconds, given to the server as --idle-timeout


@pytest.fixture(scope="module")
def server(tiny_model, start_server):
    url, proc = start_server(tiny_model, "--idle-timeout", str(IDLE_TIMEOUT))
    return url, proc.pid


def port(url):
    return int(url.rsplit(":", 1)[1])


def pings(url, times=3):
    """The status of `times` GET /ping in turn; a server that stopped answering raises (requests' timeout)."""
    return [requests.get(f"{url}/ping", timeout=30).status_code for _ in range(times)]


def still_open(sock):
    """True while the server has neither closed `sock` nor answered on it."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.timeout(60, func_only=True)
def test_idle_and_slow_connections_do_not_starve_the_server(server):
    url, _ = server
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    stalls = [head, head + b"\x89PNG" * 1000, head[:40]]  # no body, part of the body, part of the headers
    clients = []
    try:
        for i in range(150):  # more than waitress's default connection limit (100)
            clients.append(socket.create_connection(("127.0.0.1", port(url))))
            clients[-1].sendall(stalls[i % 3])
        assert pings(url) == [200, 200, 200]
        assert sum(map(still_open, clients)) == 150  # answered while every stalled client still held its connection
    finally:
        for c in clients:
            c.close()
    assert pings(url) == [200, 200, 200]


@pytest.mark.timeout(90, func_only=True)
def test_a_silent_connection_is_closed_after_the_idle_timeout(server):
    url, _ = server
    with socket.create_connection(("127.0.0.1", port(url))) as c:
        c.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        c.settimeout(IDLE_TIMEOUT + 60)  # a server that never closes it fails here
        start = time.monotonic()
        assert c.recv(100) == b""  # closed by the server, no response
        assert time.monotonic() - start >= IDLE_TIMEOUT - 1  # not before the idle timeout


@pytest.mark.timeout(60, func_only=True)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_10mb_body_gets_a_json_413(server, chunked):
    url, _ = server
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * (10 << 20)
    data = (body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)) if chunked else body
    r = requests.post(f"{url}/invocations", data=data, headers={"Content-Type": "image/png"}, timeout=30)
    assert r.status_code == 413 and r.headers["Content-Type"] == "application/json"
    assert r.json()["error"].startswith("Request Entity Too Large")
    assert pings(url) == [200, 200, 200]


@pytest.mark.timeout(30, func_only=True)
@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_deeply_nested_json_gets_a_json_400(server, body):
    url, _ = server
    r = requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json() == {"error": "JSON nested too deeply"}
    assert pings(url) == [200, 200, 200]


@pytest.mark.timeout(30, func_only=True)
def test_too_many_instances_get_a_json_413(server):
    url, _ = server
    r = requests.post(f"{url}/invocations", json={"instances": [{"b64": ""}] * 257}, timeout=10)
    assert r.status_code == 413 and r.json() == {"error": "257 instances: at most 256 per request"}


@pytest.mark.timeout(30, func_only=True)
def test_broken_http_gets_a_json_400(server):
    url, _ = server
    with socket.create_connection(("127.0.0.1", port(url))) as c:
        c.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        c.settimeout(10)
        response = b""
        while chunk := c.recv(4096):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/json" in head
    assert json.loads(body)["error"].startswith("Bad Request")


@pytest.mark.timeout(60, func_only=True)
def test_decompression_bombs_are_refused_and_memory_stays_bounded(server, png_bomb):
    url, pid = server
    before = rss_mib(pid)
    b64 = base64.b64encode(png_bomb).decode()
    for _ in range(3):
        r = requests.post(f"{url}/invocations", data=png_bomb, headers={"Content-Type": "image/png"}, timeout=20)
        assert r.status_code == 400 and r.json() == {"error": "instance 0: image is 20000x20000, the model reads 40x24"}
        r = requests.post(f"{url}/invocations", json={"instances": [{"b64": b64}] * 3}, timeout=20)
        assert r.status_code == 400 and "image is 20000x20000" in r.json()["error"]
    assert rss_mib(pid) - before < 200  # each bomb decoded took 2 GB, and kept it
    assert pings(url) == [200, 200, 200]
