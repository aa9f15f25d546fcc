"""Benchmark: accuracy of the two heads on four label spaces, on labels never seen in training, each row at a
fixed number of training images.

Label spaces (each a `generate --holdout-labels` dataset, raw pixels stored at half the render size, as the
demo; SPACES below gives each its train examples, training images and target): digits-4 (`-d --length 4`,
the demo's recipe), d-u-4 (`-d -u --length 4`, 36 classes), digits-4-6 (`-d --length 4-6`, variable
length), d-l-u-5 (`-d -l -u --length 5`, 62 classes). Heads: `train --head per-position|ctc`
(trainer/model.py). Each (space, head) trains on its training images (passes over the train split, the
trainer's warmup + cosine schedule spanning them) and is scored on the test split `--evaluations` times with
the scoring `evaluate` uses (trainer.evaluate.Scores), plus the sequence accuracy with look-alike glyphs
merged (LOOKALIKES). Each row is saved as `<work>/rows/<space>.<head>.json`, so spaces can run one at a time;
the table covers every saved row asked for. It prints sequence and character accuracy, CER, training
images/s (the per-position head on each space is the baseline of the ratio; the first step, which traces
the step function, is left out), the minutes of training to reach the space's target, and each row's most
frequent confusions, and writes, per head, a PNG of test sequence accuracy against training images seen
(`<work>/accuracy-<head>.png`, targets dotted). Training time excludes generation and the test scoring.

    python bench/accuracy.py                                  # the full run (about 3 hours on 2 cores)
    python bench/accuracy.py --spaces d-u-4 --heads ctc       # one row; --report then prints every saved row
    python bench/accuracy.py --tiny                           # plumbing: tiny images and sizes, seconds per row
"""
import argparse
import contextlib
import json
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
from trainer.model import DEFAULT_SCALE, FILTERS

# name: (generate's label flags, train examples, training images per row, target test sequence accuracy or None)
SPACES = {"digits-4": (("-d", "--length", "4"), 30000, 90000, 0.961),  # the demo's recipe: 3 passes over 30,000
          "d-u-4": (("-d", "-u", "--length", "4"), 200000, 2400000, 0.96),
          "digits-4-6": (("-d", "--length", "4-6"), 100000, 900000, 0.95),
          "d-l-u-5": (("-d", "-l", "-u", "--length", "5"), 100000, 600000, None)}
# characters whose glyphs differ in size only (a lower-case letter drawn like its capital, 0 like O): the
# "look-alikes merged" figure reads each group as one character
LOOKALIKES = ("0oO", "cC", "sS", "uU", "vV", "wW", "xX", "zZ")
MERGE = str.maketrans({c: group[-1] for group in LOOKALIKES for c in group})
TINY = dict(train_examples=256, validation_examples=32, test_examples=64, images=512, evaluations=2,
            height=40, batch_size=32)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="bench-output/accuracy", help="scratch folder (datasets, rows, curves)")
    p.add_argument("--spaces", default=",".join(SPACES), help=f"label spaces to run, of {', '.join(SPACES)}")
    p.add_argument("--heads", default=",".join(heads.HEADS), help="heads to run")
    p.add_argument("--train-examples", type=int, help="train examples of every space (default: the space's, above)")
    p.add_argument("--validation-examples", type=int, default=1000)
    p.add_argument("--test-examples", type=int, default=2000)
    p.add_argument("--images", type=int, help="training images per row (default: the space's, above)")
    p.add_argument("--evaluations", type=int, default=12, help="score on test this many times per row, evenly")
    p.add_argument("--height", type=int, default=100, help="render height (width: 40 + 20 x the longest length)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                   help="images stored and seen at the render size times this (the demo's 0.5: 60x50 of 120x100)")
    p.add_argument("--filters", default=",".join(map(str, FILTERS)), help="the trunk's convolution widths")
    p.add_argument("--workers", type=int, default=2, help="generate's --direct_num_workers")
    p.add_argument("--reuse", action="store_true", help="reuse datasets already in --work")
    p.add_argument("--recompute-statistics", action="store_true",
                   help="also score with BatchNormalization's statistics recomputed from 1,024 train images")
    p.add_argument("--report", action="store_true", help="train nothing: the table and PNGs of the rows in --work")
    p.add_argument("--tiny", action="store_true", help="a plumbing run: " + ", ".join(f"{k}={v}" for k, v in TINY.items()))
    args = p.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    args.filters = tuple(int(n) for n in args.filters.split(","))
    return args


def variant(args):
    """The model's variant in words: "" for the defaults, else what differs (stored size, trunk widths)."""
    parts = [f"scale {args.scale:g}"] if args.scale != DEFAULT_SCALE else []
    parts += [f"trunk {'-'.join(map(str, args.filters))}"] if args.filters != FILTERS else []
    return ", ".join(parts)


def make_dataset(args, space):
    """The label space's dataset under --work (raw pixels at the render size times --scale); its root."""
    flags, train_examples, _, _ = SPACES[space]
    width, height = default_width(parse_length(flags[-1])[1]), args.height
    stored = f"{round(width * args.scale)}x{round(height * args.scale)}"
    root = os.path.join(args.work, space if args.scale == DEFAULT_SCALE else f"{space}-stored-{stored}")
    if args.reuse and os.path.exists(os.path.join(root, "dataset.json")):
        return root
    subprocess.run([sys.executable, "-m", "launch.cli", "generate", "--output", root, *flags,
                    "--height", str(args.height), "--image-format", "raw", "--store-size", stored,
                    "--train-examples", str(args.train_examples or train_examples),
                    "--validation-examples", str(args.validation_examples),
                    "--test-examples", str(args.test_examples), "--holdout-labels", "--overwrite",
                    "--runner", "DirectRunner", "--direct_running_mode", "multi_processing",
                    "--direct_num_workers", str(args.workers)], check=True, stdout=subprocess.DEVNULL)
    return root


def read_split(root, spec, split, limit=None):
    """The first `limit` (default all) examples of a split: uint8 images at the stored size, and the label strings."""
    images, truths = [], []
    for x, labels, lengths in channel(split, spec, 500, path=os.path.join(root, split), deterministic=True,
                                      lengths=True).take(-1 if limit is None else -(-limit // 500)):
        images.append(x.numpy())
        truths += [spec.decode_label(label[:n]) for label, n in zip(labels.numpy(), lengths.numpy())]
    return np.concatenate(images)[:limit], truths[:limit]


@contextlib.contextmanager
def statistics_recomputed(model, images):
    """Within: the model's BatchNormalization moving statistics are those of `images` (uint8 [n, *input_shape])
    at the current weights, from one forward pass in training mode at momentum 0 ("precise BN", Wu & Johnson,
    Rethinking "Batch" in BatchNorm, 2021); after: the moving statistics and momenta as they were."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(images, training=True)
        yield
    finally:
        for layer, (momentum, mean, variance) in zip(layers, saved):
            layer.momentum = momentum
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def score(model, spec, images, truths):
    """The model's report on the test split (trainer.evaluate.Scores), reading text as the export does, plus
    `merged_sequence_accuracy`: the sequence accuracy with each LOOKALIKES group read as one character."""
    head, pad = heads.head_of(model)
    scores, merged = Scores(spec), 0
    for first in range(0, len(images), 500):
        indices, _ = heads.decode(model.predict(images[first:first + 500], verbose=0), head, pad)
        texts, batch = [spec.decode_label(row) for row in np.asarray(indices)], truths[first:first + 500]
        scores.add(texts, batch)
        merged += sum(text.translate(MERGE) == truth.translate(MERGE) for text, truth in zip(texts, batch))
    return {**scores.report(), "merged_sequence_accuracy": merged / len(truths)}


class Curve(keras.callbacks.Callback):
    """At `evaluations` evenly spaced points of `steps` training steps: the test report against images seen and
    training seconds (scoring excluded), and the training loss and sequence accuracy over the steps since the
    last point (on the training batches as trained: dropout on, batch statistics in BatchNormalization)."""

    def __init__(self, spec, images, truths, steps, evaluations, batch_size, calibration=None):
        super().__init__()
        self.calibration = calibration  # train images: also score with BatchNormalization's statistics recomputed
        self.spec, self.images, self.truths, self.batch_size = spec, images, truths, batch_size
        self.at = {round(steps * (i + 1) / evaluations) for i in range(evaluations)}
        self.points, self.steps, self.train_s, self.first_step_s = [], 0, 0.0, 0.0
        self.totals = (0, 0.0, 0.0)  # steps, summed loss, summed sequence accuracy at the last point

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if not self.first_step_s:  # the first step traces and compiles the step function
            self.first_step_s = time.perf_counter() - self.start
        if self.steps in self.at:
            self.measure(logs)

    def images_per_second(self):
        """Training images/s after the first step (which includes tracing the step function)."""
        return (self.steps - 1) * self.batch_size / max(self.train_s - self.first_step_s, 1e-9)

    def measure(self, logs):
        self.train_s += time.perf_counter() - self.start
        # Keras logs the means since the run began: their sums' differences are the means since the last point
        totals = (self.steps, float(logs["loss"]) * self.steps, float(logs["sequence_accuracy"]) * self.steps)
        window = [max(0.0, (now - then) / max(totals[0] - self.totals[0], 1))
                  for now, then in zip(totals[1:], self.totals[1:])]
        self.totals = totals
        report = score(self.model, self.spec, self.images, self.truths)
        self.points.append({"images": self.steps * self.batch_size, "train_s": self.train_s, "report": report,
                            "train_loss": window[0], "train_sequence_accuracy": window[1]})
        if self.calibration is not None:
            with statistics_recomputed(self.model, self.calibration):
                self.points[-1]["recomputed"] = score(self.model, self.spec, self.images, self.truths)
        print(f"  images={self.steps * self.batch_size} train_s={self.train_s:.0f} "
              f"sequence_accuracy={report['sequence_accuracy']:.4f} cer={report['character_error_rate']:.4f} "
              f"train: loss={window[0]:.4f} sequence_accuracy={window[1]:.4f}"
              + (f" recomputed statistics: sequence_accuracy={self.points[-1]['recomputed']['sequence_accuracy']:.4f}"
                 if self.calibration is not None else ""), flush=True)
        self.start = time.perf_counter()


def row_schedule(peak, steps_per_pass, steps):
    """The learning rate of a row's `steps` steps: the trainer's schedule (trainer.loop.schedule) spanning them,
    warmup over half a pass over the train split (`steps_per_pass`) to `peak`, then cosine decay."""
    return schedule(argparse.Namespace(epochs=1, learning_rate=peak, warmup_epochs=0.5 * steps_per_pass / steps), steps)


def run_row(args, root, space, head):
    """Train `head` on the space's dataset at `root` (args: images, batch_size, learning_rate, evaluations); the row:
    a dict of its settings and `points` (images seen, training seconds, test report at each evaluation)."""
    manifest = read_manifest(root)
    spec = manifest.spec
    images, truths = read_split(root, spec, "test")
    calibration = read_split(root, spec, "train", 1024)[0] if args.recompute_statistics else None
    steps = (args.images or SPACES[space][2]) // args.batch_size
    steps_per_pass = max(1, manifest.split("train").examples // args.batch_size)
    keras.utils.set_random_seed(0)
    model = heads.compile_model(heads.build_model(spec, head=head, scale=args.scale, filters=args.filters),
                                row_schedule(args.learning_rate, steps_per_pass, steps))
    train = channel("train", spec, args.batch_size, path=os.path.join(root, "train"), shuffle_buffer=4096, seed=0,
                    repeat=True)
    curve = Curve(spec, images, truths, steps, args.evaluations, args.batch_size, calibration)
    model.fit(train, steps_per_epoch=steps, epochs=1, callbacks=[curve], verbose=0, shuffle=False)  # the reader shuffles
    row = {"space": space, "head": head, "variant": variant(args), "spec": spec.describe(), "train_examples": manifest.split("train").examples,
           "test_examples": len(truths), "batch_size": args.batch_size, "images_per_second": curve.images_per_second(),
           "parameters": model.count_params(), "learning_rate": args.learning_rate, "points": curve.points}
    return row


def save_row(args, row):
    """Write the row to <work>/rows/<space>.<head>.json, where load_rows finds it."""
    slug = "".join(c if c.isalnum() or c == "." else "-" for c in row["variant"])
    path = os.path.join(args.work, "rows", f"{row['space']}.{row['head']}{'.' + slug if slug else ''}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(row, f, indent=1)


def load_rows(args, spaces, head_names):
    """{(space, head, variant): row} of the rows saved in --work, for the spaces and heads asked for, in that order."""
    folder, rows = os.path.join(args.work, "rows"), []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            row = json.load(f)
        if row["space"] in spaces and row["head"] in head_names:
            rows.append(row)
    rows.sort(key=lambda r: (spaces.index(r["space"]), head_names.index(r["head"]), r.get("variant", "")))
    return {(r["space"], r["head"], r.get("variant", "")): r for r in rows}


def reached(row, target):
    """Minutes of training until the test sequence accuracy first reached `target`, None if it did not."""
    return next((p["train_s"] / 60 for p in row["points"] if p["report"]["sequence_accuracy"] >= target), None)


def print_table(rows):
    """The accuracy table (Markdown), then each row's most frequent confusions."""
    print("| label space | head | model | train examples | training images | test sequence acc | test char acc | CER "
          "| look-alikes merged | training images/s | vs per-position | target | minutes to target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (space, head, model), row in rows.items():
        last, target = row["points"][-1], SPACES[space][3]
        report, rate = last["report"], row["images_per_second"]
        base = rows.get((space, "per-position", ""))
        ratio = f"{rate / base['images_per_second']:.2f}x" if base else "-"
        minutes = reached(row, target) if target else None
        met = "-" if not target else "not reached" if minutes is None else f"{minutes:.1f}"
        print(f"| {space} | {head} | {model or 'default'} | {row['train_examples']:,} | {last['images']:,} | {report['sequence_accuracy']:.2%} "
              f"| {report['char_accuracy']:.2%} | {report['character_error_rate']:.4f} "
              f"| {report['merged_sequence_accuracy']:.2%} | {rate:.0f} | {ratio} "
              f"| {f'{target:.1%}' if target else 'report'} | {met} |")
    print()
    for (space, head, model), row in rows.items():
        report = row["points"][-1]["report"]
        pairs = ", ".join(f"{c['truth'] or '(none)'}->{c['predicted'] or '(none)'} {c['count']}"
                          for c in report["top_confusions"][:8])
        errors = sum(n for truth, reads in report["confusion"].items() for read, n in reads.items() if read != truth)
        lengths = ""
        if len(report["per_length"]) > 1:
            lengths = "; per length: " + ", ".join(f"{n}: {r['sequence_accuracy']:.2%}" for n, r in report["per_length"].items())
        print(f"{space}, {head}{f' ({model})' if model else ''}: {errors} character errors; most frequent: {pairs}{lengths}")


def draw(head, rows, path):
    """One PNG for `head`: test sequence accuracy against training images seen, a line per label space, each
    space's target a dotted line in its colour."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for (space, row_head, model), row in rows.items():
        if row_head != head:
            continue
        line, = axes.plot([p["images"] for p in row["points"]], [p["report"]["sequence_accuracy"] for p in row["points"]],
                          marker="o", label=f"{space} ({model})" if model else space)
        if SPACES[space][3]:
            axes.axhline(SPACES[space][3], color=line.get_color(), linestyle=":", linewidth=1)
    axes.set_xscale("log")  # the spaces' budgets differ 25-fold
    axes.set_xlabel("training images seen")
    axes.set_ylabel("test sequence accuracy (unseen labels)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"head: {head} (dotted: targets)")
    figure.savefig(path, dpi=90)


def main(argv=None):
    args = parse_args(argv)
    spaces, head_names = args.spaces.split(","), args.heads.split(",")
    for name, known in ((spaces, SPACES), (head_names, heads.HEADS)):
        unknown = sorted(set(name) - set(known))
        if unknown:
            sys.exit(f"error: unknown {unknown[0]!r} (choose from {', '.join(known)})")
    os.makedirs(args.work, exist_ok=True)
    if not args.report:
        for space in spaces:
            root = make_dataset(args, space)
            for head in head_names:
                print(f"{space}, head {head}: {read_manifest(root).spec.describe()}", flush=True)
                save_row(args, run_row(args, root, space, head))
    rows = load_rows(args, spaces, head_names)
    print(f"\nbatch {args.batch_size}; test: captchas with labels unseen in training; minutes: of training, "
          "scoring and generation excluded")
    print_table(rows)
    for head in head_names:
        path = os.path.join(args.work, f"accuracy-{head}.png")
        draw(head, rows, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
