"""Evaluate an exported model on a split: JSON report + error-gallery PNG.

`captcha-pipeline evaluate --model-dir M --data D/test` (File mode / local), or the `test` channel in
SageMaker (File/FastFile/Pipe). PNG and raw datasets alike: images are read at the stored size as uint8
and go through the `serving_pixels` signature. Exits 2, before evaluating, when the model's and the
dataset's specs disagree or an output path cannot be written.
"""
import collections
import json
import os
import sys

import numpy as np

from tfrecord import flags, sagemaker
from tfrecord.channels import channel
from tfrecord.contact_sheet import contact_sheet
from tfrecord.errors import SpecError, exits_on_user_error
from tfrecord.manifest import TEST, locate_manifest
from tfrecord.spec import label_to_filename
from trainer import export
from trainer.metric_lines import CHAR_ACCURACY, SEQUENCE_ACCURACY


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=sagemaker.model_dir(), type=flags.existing_folder)
    p.add_argument("--data", default=sagemaker.channel_dir(TEST), help="split dir of shards")
    p.add_argument("--channel", default=TEST, help="SageMaker channel name (Pipe mode)")
    p.add_argument("--manifest", type=flags.file_or_folder,
                   help="dataset.json or its dir (default: meta channel, else beside --data)")
    p.add_argument("--report", default="evaluation.json", type=flags.writable_file)
    p.add_argument("--gallery", default="errors.png", type=flags.writable_file)
    p.add_argument("--gallery-size", type=flags.non_negative_int, default=24)
    p.add_argument("--samples", type=flags.creatable_folder,
                   help="also write the first --num-samples images here as <label>_<n>.png "
                   "(characters other than ASCII letters and digits as %%XX)")
    p.add_argument("--num-samples", type=flags.non_negative_int, default=8)
    p.add_argument("--batch-size", type=flags.positive_int, default=256)
    args = p.parse_args(argv)
    flags.distinct(args, "report", "gallery", "samples")
    return args


def evaluate(model, spec, dataset, gallery_size, num_samples=0):
    """One pass -> (report dict, [(pixels, truth, prediction, confidence)] of the first errors,
    [(pixels, truth)] of the first `num_samples` images)."""
    position_right = np.zeros(spec.length)
    confusion = collections.defaultdict(collections.Counter)
    total = sequences_right = 0
    errors, samples = [], []
    for images, labels in dataset:
        out = model.signatures["serving_pixels"](pixels=images)
        predicted = np.argmax(out["probabilities"].numpy(), axis=-1)
        labels = labels.numpy()
        samples += [(images[i].numpy(), spec.decode_label(label))
                    for i, label in enumerate(labels[:num_samples - len(samples)])]
        right = predicted == labels
        total += len(labels)
        position_right += right.sum(axis=0)
        sequences_right += int(right.all(axis=1).sum())
        for t, p in zip(labels.ravel(), predicted.ravel()):
            confusion[spec.alphabet[t]][spec.alphabet[p]] += 1
        for i in np.flatnonzero(~right.all(axis=1))[:max(0, gallery_size - len(errors))]:
            errors.append((images[i].numpy(), spec.decode_label(labels[i]), spec.decode_label(predicted[i]),
                           float(out["confidence"][i])))
    per_position = (position_right / max(total, 1)).tolist()
    mistakes = sorted(((n, t, p) for t, row in confusion.items() for p, n in row.items() if t != p), reverse=True)
    report = {
        "examples": total,
        SEQUENCE_ACCURACY: sequences_right / max(total, 1),
        CHAR_ACCURACY: float(np.mean(per_position)),
        "per_position_accuracy": per_position,
        "confusion": {t: dict(row) for t, row in sorted(confusion.items())},
        "top_confusions": [{"truth": t, "predicted": p, "count": n} for n, t, p in mistakes[:20]],
        "spec": spec.to_dict(),
    }
    return report, errors, samples


def save_gallery(errors, path, columns=4):
    """A contact sheet of misread images captioned `truth -> prediction (confidence)`."""
    from PIL import Image, ImageDraw

    captions = [f"{truth} -> {predicted} ({confidence:.2f})" for _, truth, predicted, confidence in errors]
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    tiles = []
    for (pixels, *_), caption in zip(errors, captions):
        image = Image.fromarray(np.squeeze(pixels, -1) if pixels.shape[-1] == 1 else pixels)
        # as wide as the longest caption: stored images can be narrower than their captions
        cell = Image.new(image.mode, (max(image.width, *(int(measure.textlength(c)) for c in captions)), image.height),
                         "white")
        cell.paste(image)
        tiles.append((cell, caption))
    with open(path, "wb") as f:
        f.write(contact_sheet(tiles, columns, color="red", empty="no errors", image_size=(200, 40)))


def sample_name(truth, n):
    """The file name of sample `n`, in the seed's naming `<label>_<n>.png` (predict reads the label back)."""
    return f"{label_to_filename(truth)}_{n:05d}.png"


def longest_sample_name(spec):
    """The longest name sample_name gives a label of `spec`: its longest-escaped character, length times."""
    return sample_name(max(spec.alphabet, key=lambda c: len(label_to_filename(c))) * spec.length, 0)


def save_samples(samples, folder):
    """Test images (at the stored size, which predict accepts) as PNG files in the seed's naming."""
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    for n, (pixels, truth) in enumerate(samples):
        with open(os.path.join(folder, sample_name(truth, n)), "wb") as f:
            f.write(tf.io.encode_png(pixels).numpy())


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model, spec = export.load(args.model_dir)
    manifest = locate_manifest(args.manifest, args.data, "--data")
    if manifest.spec != spec:
        raise SpecError(f"model spec ({spec.describe()}) does not match the dataset's ({manifest.spec.describe()})")
    if args.samples:
        flags.file_name_fits(args.samples, longest_sample_name(spec), "--samples")
    dataset = channel(args.channel, spec, args.batch_size, path=args.data, manifest=manifest, deterministic=True)
    report, errors, samples = evaluate(model, spec, dataset, args.gallery_size, args.num_samples if args.samples else 0)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
    save_gallery(errors, args.gallery)
    if args.samples:
        save_samples(samples, args.samples)
    print(f"examples={report['examples']} {SEQUENCE_ACCURACY}={report[SEQUENCE_ACCURACY]:.4f} "
          f"{CHAR_ACCURACY}={report[CHAR_ACCURACY]:.4f}")
    print(f"wrote {args.report} and {args.gallery} ({len(errors)} errors shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
