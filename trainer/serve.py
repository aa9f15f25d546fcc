"""`captcha-pipeline serve MODEL_DIR`: the SageMaker inference container contract over our SavedModel.

`GET /ping`; `POST /invocations` with TF Serving REST JSON (`{"instances": [{"b64": "..."}]}`) or a raw
`image/png` / `image/jpeg` body -> `{"predictions": [{"text", "confidence", "probabilities"}]}`.
Bad requests get a 4xx and `{"error": reason}`. Flask app on the waitress WSGI server.
"""
import argparse
import base64
import binascii
import json
import sys

from flask import Flask, jsonify, request

from tfrecord.errors import exits_on_user_error

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_INSTANCES = 256


class BadRequest(Exception):
    def __init__(self, reason, status=400):
        super().__init__(reason)
        self.status = status


def _instance_bytes(i, instance):
    """`{"b64": ...}` or the named-input form `{"image_bytes": {"b64": ...}}` -> the image bytes."""
    if isinstance(instance, dict) and "image_bytes" in instance:
        instance = instance["image_bytes"]
    if not (isinstance(instance, dict) and isinstance(instance.get("b64"), str)):
        raise BadRequest(f'instance {i}: expected {{"b64": "<base64 PNG or JPEG>"}}')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"instance {i}: invalid base64") from None


def request_images(mimetype, body):
    """The images a request carries, checked to be PNG or JPEG."""
    if mimetype in IMAGE_TYPES:
        images = [body]
    elif mimetype == "application/json":
        try:
            payload = json.loads(body)
        except ValueError:
            raise BadRequest("body is not valid JSON") from None
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise BadRequest('expected {"instances": [{"b64": "..."}, ...]} with at least one instance')
        if len(instances) > MAX_INSTANCES:
            raise BadRequest(f"{len(instances)} instances: at most {MAX_INSTANCES} per request", 413)
        images = [_instance_bytes(i, instance) for i, instance in enumerate(instances)]
    else:
        raise BadRequest(f"unsupported content type {mimetype or 'none'!r}: send application/json, "
                         + " or ".join(IMAGE_TYPES), 415)
    for i, image in enumerate(images):
        if not image.startswith(IMAGE_MAGIC):
            raise BadRequest(f"instance {i}: not a PNG or JPEG image")
    return images


def create_app(model_dir, max_request_bytes):
    import tensorflow as tf

    from trainer import export

    model, spec = export.load(model_dir)
    predict = model.signatures["serving_default"]
    app = Flask("captcha-pipeline")
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes

    @app.get("/ping")
    def ping():
        return jsonify(status="ok", spec=spec.describe())

    @app.post("/invocations")
    def invocations():
        try:
            images = request_images(request.mimetype, request.get_data())
        except BadRequest as e:
            return jsonify(error=str(e)), e.status
        try:
            out = predict(image_bytes=tf.constant(images))
        except tf.errors.InvalidArgumentError as e:
            return jsonify(error=f"could not decode an image: {e.message.splitlines()[0]}"), 400
        return jsonify(predictions=[
            {"text": text.decode(), "confidence": float(confidence), "probabilities": probabilities.tolist()}
            for text, confidence, probabilities in zip(out["text"].numpy(), out["confidence"].numpy(),
                                                       out["probabilities"].numpy())])

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"request body larger than {max_request_bytes} bytes"), 413

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_here(e):
        return jsonify(error=f"{e.name}: use GET /ping or POST /invocations"), e.code

    return app


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline serve", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="exported model dir (holding 1/saved_model.pb)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 inside a container)")
    p.add_argument("--port", type=int, default=8080, help="SageMaker's inference port")
    p.add_argument("--max-request-bytes", type=int, default=4 << 20)
    p.add_argument("--threads", type=int, default=4)
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None):
    import waitress

    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = create_app(args.model_dir, args.max_request_bytes)
    print(f"serving {args.model_dir} on http://{args.host}:{args.port} (GET /ping, POST /invocations)", flush=True)
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads,
                   # waitress cuts off far larger bodies itself; Flask answers the rest with a JSON reason
                   max_request_body_size=2 * args.max_request_bytes + (1 << 20), ident="captcha-pipeline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
