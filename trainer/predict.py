"""Read captchas: image files or folders -> text and confidence per image, with the exported SavedModel.

Files named like the seed's (`<label>_<uuid>.png`) also count toward an accuracy line. Each file the
model does not read (see `trainer.images`: not a PNG/JPEG of the model's size, unreadable, undecodable)
gets its own `error:` line and the rest are still predicted; the exit status is then 1.
"""
import collections
import os
import sys

from tfrecord import flags, sagemaker
from tfrecord.errors import UserError, exits_on_user_error
from tfrecord.spec import label_from_filename
from trainer import export, images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline predict", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="image files or folders of images")
    p.add_argument("--model-dir", default=sagemaker.model_dir(), type=flags.existing_folder)
    p.add_argument("--batch-size", type=flags.positive_int, default=64)
    return p.parse_args(argv)


def image_files(paths):
    """The files to read: each path, or a folder's image-named entries; a path that is neither is a UserError."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            try:
                names = os.listdir(path)
            except OSError as e:
                raise UserError(f"{path}: {e.strerror}") from None
            files += sorted(os.path.join(path, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.lexists(path):
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return files


def read_image(path, spec):
    """(bytes, None) for a file the model reads, else (None, why not); never blocks or reads without bound."""
    try:
        data = images.read_file(path)
    except images.Refused as e:
        return None, str(e)
    problem = images.refusal(data, spec)
    return (None, problem) if problem else (data, None)


def seed_label(path, spec):
    """The label in a seed-style file name `<label>_<id>.png` (written by `label_to_filename`), if it is one."""
    part, underscore, _ = os.path.basename(path).partition("_")
    label = label_from_filename(part)
    return label if underscore and len(label) in spec.lengths and set(label) <= set(spec.alphabet) else None


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    files = image_files(args.paths)
    model, spec = export.load(args.model_dir)
    signature = model.signatures["serving_default"]
    counts = collections.Counter()

    def error(path, reason):
        print(f"error: {path}: {reason}", file=sys.stderr, flush=True)
        counts["failed"] += 1

    def predict_batch(batch):
        for (path, _), result in zip(batch, export.predict_each(signature, [data for _, data in batch])):
            if isinstance(result, str):
                error(path, result)
                continue
            (text, confidence, _), truth = result, seed_label(path, spec)
            mark = "" if truth is None else ("  ok" if truth == text else f"  WRONG (truth {truth})")
            counts.update(predicted=1, labelled=truth is not None, right=truth == text)
            print(f"{path}\t{text}\t{confidence:.3f}{mark}", flush=True)

    batch = []
    for path in files:
        data, problem = read_image(path, spec)
        if problem:
            error(path, problem)
            continue
        batch.append((path, data))
        if len(batch) == args.batch_size:
            predict_batch(batch)
            batch = []
    if batch:
        predict_batch(batch)
    if counts["labelled"]:
        print(f"accuracy={counts['right'] / counts['labelled']:.4f} ({counts['right']}/{counts['labelled']} labelled files)")
    print(f"predicted {counts['predicted']} file(s), {counts['failed']} error(s)")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
