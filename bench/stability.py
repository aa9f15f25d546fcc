"""Benchmark: the dip in validation accuracy between epochs 1 and 2 at 36 classes, looked at closely.

The recipe that showed it: `-d -u --length 4` (36 classes), 60,000 train examples, 4 passes (240,000 images),
batch 64, warmup over half a pass to the peak learning rate, then cosine decay (accuracy.row_schedule). Each
setting below trains on that dataset and is scored on the test split (2,000 captchas of unseen labels)
every `--every` training images, far more often than once an epoch, by bench/accuracy.py's run_row. Prints,
per setting, the test accuracy at each pass's end, the largest fall between two consecutive scorings with the
training accuracy on the batches before each of those two scorings (did the weights fail, or only their
reading on test?), and the last figure, and draws `<work>/stability.png`: test sequence accuracy, the same with BatchNormalization's
moving statistics recomputed at the current weights (bench/accuracy.py's statistics_recomputed), and the
training batches' accuracy against images seen (pass ends dotted), above the learning rate each setting used.

    python bench/stability.py                          # about 12 minutes on 2 cores
    python bench/stability.py --tiny                   # plumbing
"""
import argparse
import json
import os
import sys

from accuracy import make_dataset, row_schedule, run_row  # bench/accuracy.py, beside this file

import keras
from trainer.model import DEFAULT_SCALE, FILTERS

SPACE = "d-u-4"
SETTINGS = (("per-position", 3e-3), ("per-position", 1e-3), ("ctc", 3e-3))  # (head, peak learning rate)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="bench-output/stability", help="scratch folder (dataset, rows, figure)")
    p.add_argument("--train-examples", type=int, default=60000)
    p.add_argument("--passes", type=int, default=4)
    p.add_argument("--every", type=int, default=10000, help="score on test every N training images")
    p.add_argument("--reuse", action="store_true", help="reuse the dataset already in --work")
    p.add_argument("--tiny", action="store_true", help="plumbing: 256 train examples, 40 px high, 2 passes")
    args = p.parse_args(argv)
    args.validation_examples, args.test_examples, args.height, args.batch_size, args.workers = 1000, 2000, 100, 64, 2
    args.scale, args.filters = DEFAULT_SCALE, FILTERS  # the trainer's model
    args.recompute_statistics = True  # each scoring also with BatchNormalization's statistics recomputed
    if args.tiny:
        args.train_examples, args.validation_examples, args.test_examples = 256, 32, 64
        args.height, args.batch_size, args.passes, args.every = 40, 32, 2, 128
    args.images = args.passes * args.train_examples
    args.evaluations = args.images // args.every
    return args


def learning_rates(args, peak):
    """The schedule run_row trains with, at every scoring point: [(images seen, learning rate)]."""
    steps = args.images // args.batch_size
    rate = row_schedule(peak, max(1, args.train_examples // args.batch_size), steps)
    return [(step * args.batch_size, float(keras.ops.convert_to_numpy(rate(step))))
            for step in range(0, steps + 1, max(1, steps // 200))]


def summary(row, args):
    """(test accuracy at each pass's end, the largest fall in test accuracy between consecutive scorings, at
    those two scorings: the training batches' accuracy and the test accuracy with the statistics recomputed,
    the last test accuracy)."""
    points = row["points"]
    accuracy = [(p["images"], p["report"]["sequence_accuracy"]) for p in points]
    ends = [next(a for seen, a in accuracy if seen >= k * args.train_examples) for k in range(1, args.passes + 1)]
    fall, at = max((before - after, i + 1) for i, ((_, before), (_, after)) in enumerate(zip(accuracy, accuracy[1:])))
    around = [points[at - 1], points[at]]
    return (ends, fall, [p["train_sequence_accuracy"] for p in around],
            [p["recomputed"]["sequence_accuracy"] for p in around], accuracy[-1][1])


def draw(rows, args, path):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for row in rows:
        label = f"{row['head']}, peak {row['learning_rate']:g}"
        seen = [p["images"] for p in row["points"]]
        line, = top.plot(seen, [p["report"]["sequence_accuracy"] for p in row["points"]], marker=".", label=f"{label}: test")
        top.plot(seen, [p["recomputed"]["sequence_accuracy"] for p in row["points"]], linestyle=":",
                 color=line.get_color(), label=f"{label}: test, statistics recomputed")
        top.plot(seen, [p["train_sequence_accuracy"] for p in row["points"]], linestyle="--", linewidth=1,
                 color=line.get_color(), label=f"{label}: train batches since the last point")
        bottom.plot(*zip(*learning_rates(args, row["learning_rate"])), label=label)
    for k in range(1, args.passes):
        for axes in (top, bottom):
            axes.axvline(k * args.train_examples, color="grey", linestyle=":", linewidth=1)
    top.set_ylabel("sequence accuracy\n(test: unseen labels)")
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize="small", loc="lower right")
    top.set_title(f"{SPACE}: {args.train_examples:,} train examples, {args.passes} passes (dotted: pass ends)")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("training images seen")
    bottom.grid(alpha=0.3)
    figure.savefig(path, dpi=90)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    root = make_dataset(args, SPACE)
    rows = []
    for head, peak in SETTINGS:
        print(f"{head}, peak learning rate {peak:g}", flush=True)
        args.learning_rate = peak
        rows.append(run_row(args, root, SPACE, head))
    with open(os.path.join(args.work, "stability.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"\n{SPACE}, {args.train_examples:,} train examples x {args.passes} passes, scored every {args.every:,} images")
    print("| head | peak learning rate | " + " | ".join(f"after pass {k}" for k in range(1, args.passes + 1))
          + " | largest fall between scorings | training batches across it | test, statistics recomputed, across it | last |")
    print("|---|---|" + "---|" * args.passes + "---|---|---|---|")
    for row in rows:
        ends, fall, train, recomputed, last = summary(row, args)
        print(f"| {row['head']} | {row['learning_rate']:g} | " + " | ".join(f"{a:.2%}" for a in ends)
              + f" | {fall:.2%} | {train[0]:.2%} -> {train[1]:.2%} | {recomputed[0]:.2%} -> {recomputed[1]:.2%} "
              f"| {last:.2%} |")
    path = os.path.join(args.work, "stability.png")
    draw(rows, args, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
