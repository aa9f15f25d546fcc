"""Read captchas: image files or folders -> text and confidence per image, with the exported SavedModel.

Files named like the seed's (`<label>_<uuid>.png`) also count toward an accuracy line. A file that is
not an image of the model's size gets a one-line error; the rest are still predicted.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tfrecord import sagemaker  # noqa: E402
from tfrecord.errors import UserError, exits_on_user_error  # noqa: E402
from trainer import export  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline predict", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="image files or folders of images")
    p.add_argument("--model-dir", default=sagemaker.model_dir())
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def image_files(paths):
    for path in paths:
        if os.path.isdir(path):
            yield from sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.exists(path):
            yield path
        else:
            raise UserError(f"{path}: no such file or folder")


def check_image(data, spec):
    """None if `data` is a PNG/JPEG of the spec's size, else why not."""
    try:
        shape = tf.io.decode_image(data, expand_animations=False).shape
    except (tf.errors.InvalidArgumentError, ValueError):
        return "not a PNG or JPEG image"
    if (shape[0], shape[1]) != (spec.height, spec.width):
        return f"image is {shape[1]}x{shape[0]}, the model reads {spec.width}x{spec.height}"
    return None


def seed_label(path, spec):
    """The label in a seed-style file name `<label>_<uuid>.png`, if it is one."""
    label = os.path.basename(path).split("_", 1)[0]
    return label if "_" in os.path.basename(path) and len(label) == spec.length and set(label) <= set(spec.alphabet) else None


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model, spec = export.load(args.model_dir)
    predict = model.signatures["serving_default"]
    good, failed, labelled, right = [], 0, 0, 0
    for path in image_files(args.paths):
        with open(path, "rb") as f:
            data = f.read()
        problem = check_image(data, spec)
        if problem:
            print(f"error: {path}: {problem}", file=sys.stderr)
            failed += 1
        else:
            good.append((path, data))
    for start in range(0, len(good), args.batch_size):
        batch = good[start:start + args.batch_size]
        out = predict(image_bytes=tf.constant([data for _, data in batch]))
        for (path, _), text, confidence in zip(batch, out["text"].numpy(), out["confidence"].numpy()):
            text, truth = text.decode(), seed_label(path, spec)
            mark = "" if truth is None else ("  ok" if truth == text else f"  WRONG (truth {truth})")
            labelled, right = labelled + (truth is not None), right + (truth == text)
            print(f"{path}\t{text}\t{confidence:.3f}{mark}")
    if labelled:
        print(f"accuracy={right / labelled:.4f} ({right}/{labelled} labelled files)")
    print(f"predicted {len(good)} file(s), {failed} error(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
