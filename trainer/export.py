"""Export: a TF Serving SavedModel at `<model_dir>/1/` plus `<model_dir>/model.keras`.

Signatures (both return `text` string[B], `probabilities` float32[B, length, classes], `confidence` float32[B]):
  serving_default  image_bytes: string[B]  PNG or JPEG bytes (TF Serving REST {"instances": [{"b64": ...}]})
  serving_pixels   pixels: float32[B, H, W, C] in [0, 1]
The spec travels as `1/assets.extra/captcha_spec.json`.
"""
import json
import os

import keras
import tensorflow as tf

from tfrecord.spec import CaptchaSpec

VERSION = "1"
SPEC_ASSET = os.path.join("assets.extra", "captcha_spec.json")


def decode_images(image_bytes, spec: CaptchaSpec):
    """Encoded PNG/JPEG bytes [B] -> float32 pixels [B, H, W, C] in [0, 1], resized to the spec if needed."""
    def decode(data):
        image = tf.io.decode_image(data, channels=spec.channels, expand_animations=False)
        image = tf.image.convert_image_dtype(image, tf.float32)
        return tf.image.resize(image, (spec.height, spec.width))
    return tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec((spec.height, spec.width, spec.channels), tf.float32))


def export(model, spec: CaptchaSpec, model_dir):
    """Write the SavedModel and the .keras file; returns the SavedModel path."""
    os.makedirs(model_dir, exist_ok=True)
    alphabet = tf.constant(list(spec.alphabet))

    def outputs(pixels):
        probabilities = tf.cast(model(pixels, training=False), tf.float32)
        best = tf.argmax(probabilities, axis=-1)
        text = tf.strings.reduce_join(tf.gather(alphabet, best), axis=-1)
        confidence = tf.reduce_prod(tf.reduce_max(probabilities, axis=-1), axis=-1)
        return {"text": text, "probabilities": probabilities, "confidence": confidence}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda image_bytes: outputs(decode_images(image_bytes, spec)),
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_pixels", outputs,
                         input_signature=[tf.TensorSpec([None, spec.height, spec.width, spec.channels], tf.float32, name="pixels")])
    path = os.path.join(model_dir, VERSION)
    archive.write_out(path, verbose=False)
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, SPEC_ASSET), "w") as f:
        json.dump(spec.to_dict(), f, indent=2)
    model.save(os.path.join(model_dir, "model.keras"))
    return path


def saved_model_path(model_dir):
    """Accept the model dir or its `1/` folder."""
    return model_dir if os.path.exists(os.path.join(model_dir, "saved_model.pb")) else os.path.join(model_dir, VERSION)


def load_spec(model_dir):
    from tfrecord.errors import UserError

    path = os.path.join(saved_model_path(model_dir), SPEC_ASSET)
    try:
        with open(path) as f:
            return CaptchaSpec.from_dict(json.load(f))
    except FileNotFoundError:
        raise UserError(f"{model_dir}: not an exported captcha model (no {SPEC_ASSET})") from None


def load(model_dir):
    """(SavedModel object, spec) from an exported model dir."""
    spec = load_spec(model_dir)
    return tf.saved_model.load(saved_model_path(model_dir)), spec
