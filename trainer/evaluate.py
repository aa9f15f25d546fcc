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

from tfrecord import flags, localfs, sagemaker
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
    p.add_argument("--report", default="evaluation.json", type=flags.local_file)
    p.add_argument("--gallery", default="errors.png", type=flags.local_file)
    p.add_argument("--gallery-size", type=flags.pictures, default=24, help="misread images on --gallery")
    p.add_argument("--samples", type=flags.local_folder,
                   help="also write the first --num-samples images here as <label>_<n>.png "
                   "(characters other than ASCII letters and digits as %%XX)")
    p.add_argument("--num-samples", type=flags.non_negative_int, default=8)
    p.add_argument("--batch-size", type=flags.positive_int, default=256)
    args = p.parse_args(argv)
    flags.distinct(args, "report", "gallery", "samples", owned="samples", inputs=("data", "manifest"))
    return args


class Scores:
    """Text read against labels, batch by batch (`add`), for any head and any label length -> `report()`:
    sequence_accuracy (text == label), char_accuracy (label characters read at their position),
    character_error_rate (the standard OCR figure: the Levenshtein distance from text to label, by
    `tf.edit_distance`, summed over the examples, over their label characters summed), per_position_accuracy
    (per label position, over the labels that have it), per_length (per label length: examples,
    sequence_accuracy, character_error_rate), confusion (label character -> character read at its position,
    "" where the text ended before it) and top_confusions."""

    def __init__(self, spec):
        self.spec = spec
        self.lengths = {n: collections.Counter() for n in spec.lengths}
        self.position_right, self.position_total = np.zeros(spec.length), np.zeros(spec.length)
        self.confusion = collections.defaultdict(collections.Counter)

    def add(self, texts, truths):
        """Add a batch: the texts read and the labels (lists of str); -> per example whether it was read right."""
        import tensorflow as tf

        def characters(strings):
            return tf.strings.unicode_split(tf.constant(strings, tf.string), "UTF-8").to_sparse()

        distances = tf.edit_distance(characters(texts), characters(truths), normalize=False).numpy()
        for text, truth, distance in zip(texts, truths, distances):
            self.lengths[len(truth)].update(examples=1, right=text == truth, characters=len(truth), distance=float(distance))
            for position, char in enumerate(truth):
                read = text[position] if position < len(text) else ""
                self.position_total[position] += 1
                self.position_right[position] += read == char
                self.confusion[char][read] += 1
        return [text == truth for text, truth in zip(texts, truths)]

    def report(self):
        total = sum(self.lengths.values(), collections.Counter())
        confusion = self.confusion
        mistakes = sorted(((n, t, p) for t, row in confusion.items() for p, n in row.items() if t != p), reverse=True)
        return {
            "examples": total["examples"],
            SEQUENCE_ACCURACY: total["right"] / max(total["examples"], 1),
            CHAR_ACCURACY: float(self.position_right.sum() / max(self.position_total.sum(), 1)),
            "character_error_rate": total["distance"] / max(total["characters"], 1),
            "per_position_accuracy": (self.position_right / np.maximum(self.position_total, 1)).tolist(),
            "per_length": {str(n): {"examples": c["examples"], SEQUENCE_ACCURACY: c["right"] / max(c["examples"], 1),
                                    "character_error_rate": c["distance"] / max(c["characters"], 1)}
                           for n, c in self.lengths.items()},
            "confusion": {t: dict(row) for t, row in sorted(confusion.items())},
            "top_confusions": [{"truth": t, "predicted": p, "count": n} for n, t, p in mistakes[:20]],
            "spec": self.spec.to_dict(),
        }


def evaluate(model, spec, dataset, gallery_size, num_samples=0):
    """One pass over `dataset` of (images, labels, lengths) (a reader's with lengths=True) through the model's
    `serving_pixels` signature -> (report dict (see Scores), [(pixels, truth, prediction, confidence)] of the
    first errors, [(pixels, truth)] of the first `num_samples` images). Every figure compares the signature's
    `text` with the label, so it holds for any head and length."""
    scores, errors, samples = Scores(spec), [], []
    for images, labels, lengths in dataset:
        out = model.signatures["serving_pixels"](pixels=images)
        texts = [t.decode() for t in out["text"].numpy()]
        truths = [spec.decode_label(label[:n]) for label, n in zip(labels.numpy(), lengths.numpy())]
        samples += [(images[i].numpy(), truth) for i, truth in enumerate(truths[:num_samples - len(samples)])]
        for i, right in enumerate(scores.add(texts, truths)):
            if not right and len(errors) < gallery_size:
                errors.append((images[i].numpy(), truths[i], texts[i], float(out["confidence"][i])))
    return scores.report(), errors, samples


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
    localfs.write_atomic(path, contact_sheet(tiles, columns, color="red", empty="no errors", image_size=(200, 40)))


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
        path = localfs.inside(folder, sample_name(truth, n), f"the sample file of label {truth!r}")
        localfs.write_atomic(path, tf.io.encode_png(pixels).numpy())


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model, spec = export.load(args.model_dir)
    manifest = locate_manifest(args.manifest, args.data, "--data")
    if manifest.spec != spec:
        raise SpecError(f"model spec ({spec.describe()}) does not match the dataset's ({manifest.spec.describe()})")
    if args.samples:
        flags.file_name_fits(args.samples, longest_sample_name(spec), "--samples")
    dataset = channel(args.channel, spec, args.batch_size, path=args.data, manifest=manifest, deterministic=True,
                      lengths=True)
    report, errors, samples = evaluate(model, spec, dataset, args.gallery_size, args.num_samples if args.samples else 0)
    localfs.write_atomic(args.report, json.dumps(report, indent=2))
    save_gallery(errors, args.gallery)
    if args.samples:
        save_samples(samples, args.samples)
    print(f"examples={report['examples']} {SEQUENCE_ACCURACY}={report[SEQUENCE_ACCURACY]:.4f} "
          f"{CHAR_ACCURACY}={report[CHAR_ACCURACY]:.4f} character_error_rate={report['character_error_rate']:.4f}")
    if spec.variable:
        print(" ".join(f"length {n}: {r[SEQUENCE_ACCURACY]:.4f} of {r['examples']}" for n, r in report["per_length"].items()))
    print(f"wrote {args.report} and {args.gallery} ({len(errors)} errors shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
