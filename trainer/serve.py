"""`captcha-pipeline serve MODEL_DIR`: the SageMaker inference container contract over our SavedModel.

`GET /ping`; `POST /invocations` with TF Serving's REST request format, or a raw `image/png` / `image/jpeg`
body (read by `serving_default`) -> `{"predictions": [{"text", "confidence", "probabilities"}]}`:
  {"instances": [{"b64": "..."}, ...]}                                        serving_default (the default)
  {"signature_name": "serving_pixels", "instances": [H x W x C uint8 lists]}  serving_pixels, the stored size
A `signature_name` the model lacks is a 400 with TF Serving's error text. Every error is JSON,
`{"error": reason}` as TF Serving writes it: 4xx for bad requests (images outside `trainer.images`' policy are
refused with its reason before TensorFlow decodes anything), 500 for our own faults. Flask app on the waitress
WSGI server, whose limits keep idle or slow clients from starving it.

Logging: one line at start; then at most one summary line per `--log-interval` seconds in which requests
were answered, and one when the server stops (SIGTERM or Ctrl-C), on stderr:
`served N requests in S s: N ok, N 4xx, N 5xx; mean M ms, max M ms; queue depth up to Q`. Our own faults
(500s) are logged with their traceback. waitress's per-request "Task queue depth is N" warning is counted
into the summary (queue depth > 0 means all `--threads` were busy), not printed.
"""
import base64
import binascii
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

import waitress
from flask import Flask, jsonify, request
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask
from werkzeug.exceptions import HTTPException

from tfrecord import flags
from tfrecord.errors import UserError, exits_on_user_error
from trainer import images

IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_INSTANCES = 256
SIGNATURES = ("serving_default", "serving_pixels")  # the ones `trainer.export` writes; TF Serving's default name first
DEFAULT_THREADS = max(4, 2 * (os.cpu_count() or 1))  # requests wait on TensorFlow, which releases the GIL
MAX_THREADS = 1024  # each thread holds a stack and a request's image: beyond this, more servers


class Refused(Exception):
    def __init__(self, reason, status=400):
        super().__init__(reason)
        self.status = status


def _instance_bytes(i, instance):
    """`{"b64": ...}` or the named-input form `{"image_bytes": {"b64": ...}}` -> the image bytes."""
    if isinstance(instance, dict) and "image_bytes" in instance:
        instance = instance["image_bytes"]
    if not (isinstance(instance, dict) and isinstance(instance.get("b64"), str)):
        raise Refused(f'instance {i}: expected {{"b64": "<base64 PNG or JPEG>"}}')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"instance {i}: invalid base64") from None


def _pixels(i, instance, spec):
    """`[[[...]]]` (H x W x C integers 0-255 at the stored size) or `{"pixels": ...}` -> a uint8 array."""
    import numpy as np

    if isinstance(instance, dict) and "pixels" in instance:
        instance = instance["pixels"]
    expected = f'instance {i}: expected {"x".join(map(str, spec.input_shape))} integers 0-255 (serving_pixels takes ' \
               f'uint8[B, {", ".join(map(str, spec.input_shape))}])'
    try:
        pixels = np.array(instance)
    except ValueError:  # ragged
        raise Refused(expected) from None
    if pixels.shape != spec.input_shape or pixels.dtype.kind not in "iu" or pixels.min() < 0 or pixels.max() > 255:
        raise Refused(expected)
    return pixels.astype(np.uint8)


def parse_request(mimetype, body, spec):
    """(signature name, inputs) of a request: image bytes for `serving_default`, each checked against the
    image policy; uint8 arrays for `serving_pixels`. Refused (4xx) with the reason otherwise."""
    if mimetype in IMAGE_TYPES:
        name, instances = SIGNATURES[0], [body]
    elif mimetype == "application/json":
        try:
            payload = json.loads(body)
        except RecursionError:
            raise Refused("JSON nested too deeply") from None
        except ValueError:
            raise Refused("body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise Refused('expected {"instances": [{"b64": "..."}, ...]} with at least one instance')
        name = payload.get("signature_name", SIGNATURES[0])
        if name not in SIGNATURES:  # TF Serving's words and status for a signature the model lacks
            raise Refused(f'Serving signature name: "{name}" not found in signature def')
        instances = payload.get("instances")
        if not isinstance(instances, list) or not instances:
            raise Refused('expected {"instances": [{"b64": "..."}, ...]} with at least one instance'
                          if name == SIGNATURES[0] else 'expected {"instances": [...]} with at least one instance')
        if len(instances) > MAX_INSTANCES:
            raise Refused(f"{len(instances)} instances: at most {MAX_INSTANCES} per request", 413)
        if name == "serving_pixels":
            return name, [_pixels(i, instance, spec) for i, instance in enumerate(instances)]
        instances = [_instance_bytes(i, instance) for i, instance in enumerate(instances)]
    else:
        raise Refused(f"unsupported content type {mimetype or 'none'!r}: send application/json, "
                      + " or ".join(IMAGE_TYPES), 415)
    for i, image in enumerate(instances):
        problem = images.refusal(image, spec)
        if problem:
            raise Refused(f"instance {i}: {problem}")
    return name, instances


class Summary(logging.Handler):
    """Requests answered, by outcome, their latency, and the deepest waitress task queue, since the last line.
    Installed as the handler of waitress's queue logger, whose per-request warnings it counts."""

    def __init__(self):
        super().__init__()
        self.counting = threading.Lock()
        self._start_period()

    def _start_period(self):
        self.since = time.monotonic()
        self.counts, self.seconds, self.slowest, self.depth = {"ok": 0, "4xx": 0, "5xx": 0}, 0.0, 0.0, 0

    def emit(self, record):  # waitress: "Task queue depth is %d"
        with self.counting:
            self.depth = max([self.depth, *(a for a in record.args if isinstance(a, int))])

    def request(self, status, seconds):
        with self.counting:
            self.counts["ok" if status < 400 else "4xx" if status < 500 else "5xx"] += 1
            self.seconds += seconds
            self.slowest = max(self.slowest, seconds)

    def line(self):
        """The summary since the last line, or None if no request was answered; starts a new period."""
        with self.counting:
            now, total = time.monotonic(), sum(self.counts.values())
            text = None if not total else (
                f"served {total} requests in {now - self.since:.0f} s: "
                + ", ".join(f"{n} {kind}" for kind, n in self.counts.items())
                + f"; mean {1000 * self.seconds / total:.0f} ms, max {1000 * self.slowest:.0f} ms; "
                + f"queue depth up to {self.depth}")
            self._start_period()
            return text


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (body or headers too large, broken framing) as JSON, like ours."""

    def execute(self):
        error = self.request.error
        body = json.dumps({"error": f"{error.reason}: {error.body}"}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    error_task_class = JsonErrorTask


def create_app(model_dir, summary=None):
    """The Flask app serving the exported model at `model_dir`; each answered request is counted in `summary`."""
    from trainer import export

    model, spec = export.load(model_dir)
    signatures = {name: model.signatures[name] for name in SIGNATURES}
    app = Flask("captcha-pipeline")

    @app.get("/ping")
    def ping():
        return jsonify(status="ok", spec=spec.describe())

    @app.post("/invocations")
    def invocations():
        name, inputs = parse_request(request.mimetype, request.get_data(), spec)
        run = export.predict_each if name == "serving_default" else export.predict_pixels
        results = run(signatures[name], inputs)
        for i, result in enumerate(results):
            if isinstance(result, str):
                raise Refused(f"instance {i}: {result}")
        return jsonify(predictions=[{"text": text, "confidence": confidence, "probabilities": probabilities}
                                    for text, confidence, probabilities in results])

    @app.before_request
    def started():
        request.environ["captcha.started"] = time.perf_counter()

    @app.after_request
    def answered(response):
        if summary is not None:
            summary.request(response.status_code, time.perf_counter() - request.environ["captcha.started"])
        return response

    @app.errorhandler(Refused)
    def refused(e):
        return jsonify(error=str(e)), e.status

    @app.errorhandler(HTTPException)
    def http_error(e):
        return jsonify(error=f"{e.name}: use GET /ping or POST /invocations" if e.code in (404, 405) else e.name), e.code

    @app.errorhandler(Exception)
    def internal_error(e):
        app.logger.error("%s %s failed", request.method, request.path, exc_info=e)
        return jsonify(error=f"internal error: {type(e).__name__}"), 500

    return app


def listen(host, port):
    """A socket listening on host:port, before the model loads (clients wait for it in the backlog);
    UserError if it cannot be had."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: not a TCP port (1-65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline serve", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=flags.existing_folder, help="exported model dir (holding 1/saved_model.pb)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    p.add_argument("--port", type=flags.port, default=8080, help="SageMaker's inference port")
    p.add_argument("--max-request-bytes", type=flags.positive_int, default=images.MAX_IMAGE_BYTES,
                   help="larger bodies get a 413 unread (default: the image size limit)")
    p.add_argument("--threads", type=flags.at_least(1, most=MAX_THREADS), default=DEFAULT_THREADS,
                   help="requests answered at once (default: 2 per CPU, at least 4); others wait in waitress's "
                        "queue, at most one per open connection")
    p.add_argument("--log-interval", type=flags.seconds, default=60,
                   help="seconds between summary lines (one per period with requests, and one at the end)")
    p.add_argument("--idle-timeout", type=flags.seconds, default=30,
                   help="seconds after which a connection that sends nothing is closed")
    p.add_argument("--connection-limit", type=flags.positive_int, default=500,
                   help="open connections at most; idle or slow clients below it cannot starve the server")
    return p.parse_args(argv)


def _stop(signum, frame):
    raise KeyboardInterrupt  # waitress's run() ends on it, after its threads


def _log_summaries(summary, interval, stopped):
    while not stopped.wait(interval):
        line = summary.line()
        if line:
            print(line, file=sys.stderr, flush=True)


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sock = listen(args.host, args.port)
    summary = Summary()
    queue_logger = logging.getLogger("waitress.queue")
    queue_logger.addHandler(summary)
    queue_logger.propagate = False  # counted into the summary line, not printed per request
    server = waitress.create_server(
        create_app(args.model_dir, summary), sockets=[sock], threads=args.threads, ident="captcha-pipeline",
        max_request_body_size=args.max_request_bytes, connection_limit=args.connection_limit,
        channel_timeout=args.idle_timeout, cleanup_interval=1, asyncore_use_poll=True)  # poll: no 1024-fd cap
    server.channel_class = Channel
    stopped = threading.Event()
    threading.Thread(target=_log_summaries, args=(summary, args.log_interval, stopped), daemon=True).start()
    signal.signal(signal.SIGTERM, _stop)  # how SageMaker and Docker stop a container
    print(f"serving {args.model_dir} on http://{args.host}:{args.port} (GET /ping, POST /invocations)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        stopped.set()
        line = summary.line()
        if line:
            print(line, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
