"""`captcha-pipeline serve MODEL_DIR`: the SageMaker inference container contract over our SavedModel.

`GET /ping`; `POST /invocations` with TF Serving REST JSON (`{"instances": [{"b64": "..."}]}`) or a raw
`image/png` / `image/jpeg` body -> `{"predictions": [{"text", "confidence", "probabilities"}]}`.
Every error is JSON, `{"error": reason}`: 4xx for bad requests (images outside `trainer.images`' policy
are refused from their headers, before any decoding), 500 for our own faults. Flask app on the waitress
WSGI server, whose limits keep idle or slow clients from starving it.
"""
import argparse
import base64
import binascii
import json
import socket
import sys

import waitress
from flask import Flask, jsonify, request
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask
from werkzeug.exceptions import HTTPException

from tfrecord.errors import UserError, exits_on_user_error
from trainer import images

IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_INSTANCES = 256


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


def request_images(mimetype, body, spec):
    """The images a request carries, each checked against the image policy from its header."""
    if mimetype in IMAGE_TYPES:
        found = [body]
    elif mimetype == "application/json":
        try:
            payload = json.loads(body)
        except RecursionError:
            raise Refused("JSON nested too deeply") from None
        except ValueError:
            raise Refused("body is not valid JSON") from None
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise Refused('expected {"instances": [{"b64": "..."}, ...]} with at least one instance')
        if len(instances) > MAX_INSTANCES:
            raise Refused(f"{len(instances)} instances: at most {MAX_INSTANCES} per request", 413)
        found = [_instance_bytes(i, instance) for i, instance in enumerate(instances)]
    else:
        raise Refused(f"unsupported content type {mimetype or 'none'!r}: send application/json, "
                      + " or ".join(IMAGE_TYPES), 415)
    for i, image in enumerate(found):
        problem = images.refusal(image, spec)
        if problem:
            raise Refused(f"instance {i}: {problem}")
    return found


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


def create_app(model_dir):
    from trainer import export

    model, spec = export.load(model_dir)
    signature = model.signatures["serving_default"]
    app = Flask("captcha-pipeline")

    @app.get("/ping")
    def ping():
        return jsonify(status="ok", spec=spec.describe())

    @app.post("/invocations")
    def invocations():
        results = export.predict_each(signature, request_images(request.mimetype, request.get_data(), spec))
        for i, result in enumerate(results):
            if isinstance(result, str):
                raise Refused(f"instance {i}: {result}")
        return jsonify(predictions=[{"text": text, "confidence": confidence, "probabilities": probabilities}
                                    for text, confidence, probabilities in results])

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
    p = argparse.ArgumentParser(prog="captcha-pipeline serve", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="exported model dir (holding 1/saved_model.pb)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    p.add_argument("--port", type=int, default=8080, help="SageMaker's inference port")
    p.add_argument("--max-request-bytes", type=int, default=4 << 20, help="larger bodies get a 413 unread")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--idle-timeout", type=int, default=30,
                   help="seconds after which a connection that sends nothing is closed")
    p.add_argument("--connection-limit", type=int, default=500,
                   help="open connections at most; idle or slow clients below it cannot starve the server")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for flag in ("max_request_bytes", "threads", "idle_timeout", "connection_limit"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    sock = listen(args.host, args.port)
    server = waitress.create_server(
        create_app(args.model_dir), sockets=[sock], threads=args.threads, ident="captcha-pipeline",
        max_request_body_size=args.max_request_bytes, connection_limit=args.connection_limit,
        channel_timeout=args.idle_timeout, cleanup_interval=1, asyncore_use_poll=True)  # poll: no 1024-fd cap
    server.channel_class = Channel
    print(f"serving {args.model_dir} on http://{args.host}:{args.port} (GET /ping, POST /invocations)", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
