"""Benchmark: accuracy of the two heads on four label spaces, on labels never seen in training, at a fixed
number of training images.

Label spaces (each a `generate --holdout-labels` dataset, raw pixels stored at half the render size, as the
demo): digits-4 (`-d --length 4`, the demo), d-u-4 (`-d -u --length 4`, 36 classes), d-l-u-5 (`-d -l -u
--length 5`, 62 classes), digits-4-6 (`-d --length 4-6`, variable length). Heads: `train --head
per-position|ctc` (trainer/model.py). Each (space, head) trains on the same `--images` training images
(passes over the train split, the trainer's warmup + cosine schedule spanning them) and is scored on the
test split every `--eval-every` images with the scoring `evaluate` uses (trainer.evaluate.Scores).
Prints one table (sequence accuracy, character accuracy, CER, training images/s, minutes of training to
reach `--target` sequence accuracy; the per-position head on each space is the baseline of the images/s
ratio; images/s leave out the first step, which traces the step function) and
writes, per head, a PNG of test sequence accuracy against training images seen (`<work>/accuracy-<head>.png`).
Training time excludes generation and the test scoring.

    python bench/accuracy.py                                  # the full run (hours on 2 cores)
    python bench/accuracy.py --tiny                           # plumbing: tiny images and sizes, seconds per row
"""
import argparse
import os
import subprocess
import sys
import time

import trainer  # noqa: F401  first: TensorFlow's start-up lines stay off stderr (trainer/__init__.py)
import keras
import numpy as np

from tfrecord.channels import channel
from tfrecord.manifest import read_manifest
from tfrecord.spec import default_width, parse_length
from trainer import model as heads
from trainer.evaluate import Scores
from trainer.loop import schedule

SPACES = {"digits-4": ("-d", "--length", "4"), "d-u-4": ("-d", "-u", "--length", "4"),
          "d-l-u-5": ("-d", "-l", "-u", "--length", "5"), "digits-4-6": ("-d", "--length", "4-6")}
TINY = dict(train_examples=256, validation_examples=32, test_examples=64, images=512, eval_every=256,
            height=40, batch_size=32)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="bench-output/accuracy", help="scratch folder (datasets, curves)")
    p.add_argument("--spaces", default=",".join(SPACES), help=f"label spaces to run, of {', '.join(SPACES)}")
    p.add_argument("--heads", default=",".join(heads.HEADS), help="heads to run")
    p.add_argument("--train-examples", type=int, default=60000)
    p.add_argument("--validation-examples", type=int, default=1000)
    p.add_argument("--test-examples", type=int, default=2000)
    p.add_argument("--images", type=int, default=240000, help="training images per row (passes x train examples)")
    p.add_argument("--eval-every", type=int, default=30000, help="score on test every N training images")
    p.add_argument("--target", type=float, default=0.96, help="report the minutes to this test sequence accuracy")
    p.add_argument("--height", type=int, default=100, help="render height (width: 40 + 20 x the longest length)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--workers", type=int, default=2, help="generate's --direct_num_workers")
    p.add_argument("--reuse", action="store_true", help="reuse datasets already in --work")
    p.add_argument("--tiny", action="store_true", help="a plumbing run: " + ", ".join(f"{k}={v}" for k, v in TINY.items()))
    args = p.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    return args


def make_dataset(args, space):
    """The label space's dataset under --work (raw pixels at half the render size); its root."""
    root = os.path.join(args.work, space)
    if args.reuse and os.path.exists(os.path.join(root, "dataset.json")):
        return root
    flags = SPACES[space]
    width = default_width(parse_length(flags[-1])[1])
    subprocess.run([sys.executable, "-m", "launch.cli", "generate", "--output", root, *flags,
                    "--height", str(args.height), "--image-format", "raw", "--store-size", f"{width // 2}x{args.height // 2}",
                    "--train-examples", str(args.train_examples), "--validation-examples", str(args.validation_examples),
                    "--test-examples", str(args.test_examples), "--holdout-labels", "--overwrite",
                    "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                    "--direct_num_workers", str(args.workers)], check=True, stdout=subprocess.DEVNULL)
    return root


def test_split(root, spec):
    """The test split: uint8 images at the stored size, and the label strings."""
    images, truths = [], []
    for x, labels, lengths in channel("test", spec, 500, path=os.path.join(root, "test"), deterministic=True,
                                      lengths=True):
        images.append(x.numpy())
        truths += [spec.decode_label(label[:n]) for label, n in zip(labels.numpy(), lengths.numpy())]
    return np.concatenate(images), truths


def score(model, spec, images, truths):
    """The model's report on the test split (trainer.evaluate.Scores), reading text as the export does."""
    head, pad = heads.head_of(model)
    scores = Scores(spec)
    for first in range(0, len(images), 500):
        indices, _ = heads.decode(model.predict(images[first:first + 500], verbose=0), head, pad)
        scores.add([spec.decode_label(row) for row in np.asarray(indices)], truths[first:first + 500])
    return scores.report()


class Curve(keras.callbacks.Callback):
    """Every `every` training images: the test report against images seen and training seconds (scoring excluded)."""

    def __init__(self, spec, images, truths, every, batch_size):
        super().__init__()
        self.spec, self.images, self.truths, self.every, self.batch_size = spec, images, truths, every, batch_size
        self.points, self.seen, self.train_s, self.first_step_s = [], 0, 0.0, 0.0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seen += self.batch_size
        if not self.first_step_s:  # the first step traces and compiles the step function
            self.first_step_s = time.perf_counter() - self.start
        if self.seen % self.every < self.batch_size:
            self.measure()

    def images_per_second(self):
        """Training images/s after the first step (which includes tracing the step function)."""
        return (self.seen - self.batch_size) / max(self.train_s - self.first_step_s, 1e-9)

    def measure(self):
        self.train_s += time.perf_counter() - self.start
        report = score(self.model, self.spec, self.images, self.truths)
        self.points.append((self.seen, self.train_s, report))
        print(f"  images={self.seen} train_s={self.train_s:.0f} sequence_accuracy={report['sequence_accuracy']:.4f} "
              f"cer={report['character_error_rate']:.4f}", flush=True)
        self.start = time.perf_counter()


def run_row(args, root, head):
    manifest = read_manifest(root)
    spec = manifest.spec
    images, truths = test_split(root, spec)
    steps = args.images // args.batch_size
    steps_per_pass = max(1, manifest.split("train").examples // args.batch_size)
    keras.utils.set_random_seed(0)
    model = heads.compile_model(heads.build_model(spec, head=head), schedule(argparse.Namespace(
        epochs=1, learning_rate=args.learning_rate, warmup_epochs=0.5 * steps_per_pass / steps), steps))
    train = channel("train", spec, args.batch_size, path=os.path.join(root, "train"), shuffle_buffer=4096, seed=0,
                    repeat=True)
    curve = Curve(spec, images, truths, args.eval_every, args.batch_size)
    model.fit(train, steps_per_epoch=steps, epochs=1, callbacks=[curve], verbose=0, shuffle=False)  # the reader shuffles
    if not curve.points or curve.points[-1][0] != curve.seen:
        curve.measure()
    return curve


def draw(head, rows, path):
    """One PNG for `head`: test sequence accuracy against training images seen, a line per label space."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for space, curve in rows.items():
        axes.plot([seen for seen, _, _ in curve.points], [r["sequence_accuracy"] for _, _, r in curve.points],
                  marker="o", label=space)
    axes.set_xlabel("training images seen")
    axes.set_ylabel("test sequence accuracy (unseen labels)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"head: {head}")
    figure.savefig(path, dpi=90)


def main(argv=None):
    args = parse_args(argv)
    spaces, head_names = args.spaces.split(","), args.heads.split(",")
    for name, known in ((spaces, SPACES), (head_names, heads.HEADS)):
        unknown = sorted(set(name) - set(known))
        if unknown:
            sys.exit(f"error: unknown {unknown[0]!r} (choose from {', '.join(known)})")
    os.makedirs(args.work, exist_ok=True)
    results = {head: {} for head in head_names}
    for space in spaces:
        root = make_dataset(args, space)
        for head in head_names:
            print(f"{space}, head {head}: {read_manifest(root).spec.describe()}", flush=True)
            results[head][space] = run_row(args, root, head)
    print(f"\n{args.images} training images per row, batch {args.batch_size}; test: {args.test_examples} captchas "
          "with labels unseen in training")
    print(f"| label space | head | test sequence acc | test char acc | CER | training images/s | vs per-position "
          f"| minutes to {args.target:.0%} |")
    print("|---|---|---|---|---|---|---|---|")
    for space in spaces:
        for head in head_names:
            curve = results[head][space]
            report, rate = curve.points[-1][2], curve.images_per_second()
            base = results.get("per-position", {}).get(space)
            ratio = f"{rate / base.images_per_second():.2f}x" if base else "-"
            reach = next((s for _, s, r in curve.points if r["sequence_accuracy"] >= args.target), None)
            print(f"| {space} | {head} | {report['sequence_accuracy']:.4f} | {report['char_accuracy']:.4f} "
                  f"| {report['character_error_rate']:.4f} | {rate:.0f} | {ratio} "
                  f"| {'not reached' if reach is None else f'{reach / 60:.1f}'} |")
    for head, rows in results.items():
        path = os.path.join(args.work, f"accuracy-{head}.png")
        draw(head, rows, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
