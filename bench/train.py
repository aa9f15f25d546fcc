"""Benchmark: our trainer vs the seed's recipe, and our two storage formats, scored on the same unseen-label test images.

Rows: the seed recipe rebuilt (gen_captcha.py `-n N` permutation PNGs, 70/30 then 70/30 split, PIL-per-file
generator, Conv16-32-64 + Dense1024 + ONE softmax over all length x classes, batch 64, 5 epochs); our model
on a Beam-made `--holdout-labels` dataset of PNGs at the render size 120x100 (resized to 60x50 inside the
model); and our model on the same examples stored as raw uint8 pixels at 60x50 (each PNG box-downscaled
once, exactly as `generate --image-format raw --store-size 60x50` would store it; no resizing in the model).
All are scored on the same test captchas. Prints a table with training wall time, examples/s (and the
ratio to PNG), test accuracy, our time to reach the seed's accuracy and the ratio.

The defaults are a short plumbing run; the full run's command is in the README (section trainer).
"""
import argparse
import dataclasses
import glob
import hashlib
import io
import itertools
import os
import random
import subprocess
import sys
import time
import uuid
from multiprocessing import Pool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from beam_jobs.render import Renderer  # noqa: E402
from tfrecord import framing, schema  # noqa: E402
from tfrecord.channels import channel  # noqa: E402
from tfrecord.manifest import MANIFEST_NAME, ShardInfo, read_manifest  # noqa: E402
from tfrecord.spec import parse_size  # noqa: E402
from trainer import model as ours  # noqa: E402
from trainer.loop import schedule  # noqa: E402

DIGITS, LENGTH, WIDTH, HEIGHT = "0123456789", 4, 120, 100


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="bench-output/train", help="scratch folder (datasets, models)")
    p.add_argument("--train-examples", type=int, default=8000)
    p.add_argument("--validation-examples", type=int, default=500)
    p.add_argument("--test-examples", type=int, default=1000)
    p.add_argument("--color-mode", default="RGB", help="color mode of our dataset (the seed trains on RGB)")
    p.add_argument("--epochs", type=int, default=3, help="our model's epochs (cosine schedule spans them)")
    p.add_argument("--budget-minutes", type=float, default=90, help="stop our training after this much")
    p.add_argument("--target", type=float, default=0.995, help="report our time to this test sequence accuracy")
    p.add_argument("--eval-every", type=int, default=100, help="score our model on test every N steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--seed-rounds", type=int, default=1, help="gen_captcha.py -n (the seed used 6)")
    p.add_argument("--seed-epochs", type=int, default=5)
    p.add_argument("--seed-max-files", type=int, default=0, help="cap the seed's files (0: all rounds)")
    p.add_argument("--reuse", action="store_true", help="reuse datasets already in --work")
    p.add_argument("--data", help="use this existing PNG dataset (dataset.json + splits) instead of running the Beam job")
    p.add_argument("--rows", default="seed,png,raw", help="which rows to run, of seed, png, raw")
    p.add_argument("--store-size", default="60x50", help="the raw row's stored size (a whole fraction of the render size)")
    return p.parse_args(argv)


# --- the seed recipe --------------------------------------------------------------------------

def _seed_write(args):
    """gen_captcha.py: one round of every ordered arrangement of 4 distinct digits as <label>_<uuid4>.png."""
    from captcha.image import ImageCaptcha

    folder, labels = args
    image = ImageCaptcha(width=WIDTH, height=HEIGHT)
    for label in labels:
        image.write(label, os.path.join(folder, f"{label}_{uuid.uuid4()}.png"))


def seed_files(folder, rounds, reuse):
    if not (reuse and glob.glob(os.path.join(folder, "*.png"))):
        os.makedirs(folder, exist_ok=True)
        labels = ["".join(p) for p in itertools.permutations(DIGITS, LENGTH)] * rounds
        with Pool(2) as pool:  # generation time is not part of the comparison
            pool.map(_seed_write, [(folder, labels[i::8]) for i in range(8)])
    return sorted(glob.glob(os.path.join(folder, "*.png")))


def seed_generator(files, batch_size):
    """The seed's Python generator: PIL opens each PNG, /255, one-hot labels [4, 10]."""
    from PIL import Image

    while True:
        for start in range(0, len(files) - batch_size + 1, batch_size):
            batch = files[start:start + batch_size]
            x = np.stack([np.asarray(Image.open(f), dtype="float32") / 255 for f in batch])
            y = np.zeros((len(batch), LENGTH, len(DIGITS)), "float32")
            for i, f in enumerate(batch):
                y[i, range(LENGTH), [DIGITS.index(c) for c in os.path.basename(f)[:LENGTH]]] = 1
            yield x, y


def seed_model():
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((HEIGHT, WIDTH, 3)),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(1024, activation="relu"),
        layers.Dense(LENGTH * len(DIGITS), activation="softmax"),  # one softmax over all 40 outputs
        layers.Reshape((LENGTH, len(DIGITS))),
    ])
    model.compile("adam", "categorical_crossentropy")
    return model


def run_seed(args, files):
    random.Random(0).shuffle(files)
    cut = int(len(files) * 0.7)
    trainval = files[:cut]  # 70/30, then 70/30 again: trains on 49%
    cut2 = int(len(trainval) * 0.7)
    train, validation = trainval[:cut2], trainval[cut2:]
    model = seed_model()
    start = time.perf_counter()
    model.fit(seed_generator(train, args.batch_size), steps_per_epoch=len(train) // args.batch_size,
              validation_data=seed_generator(validation, args.batch_size),
              validation_steps=len(validation) // args.batch_size, epochs=args.seed_epochs, verbose=0)
    return model, time.perf_counter() - start, len(train)


# --- our model --------------------------------------------------------------------------------

def make_dataset(args, root):
    if args.reuse and os.path.exists(os.path.join(root, "dataset.json")):
        return read_manifest(root)
    subprocess.run([sys.executable, "-m", "launch.cli", "generate", "--output", root, "-d", "--length", str(LENGTH),
                    "--color-mode", args.color_mode, "--train-examples", str(args.train_examples),
                    "--validation-examples", str(args.validation_examples), "--test-examples", str(args.test_examples),
                    "--holdout-labels", "--overwrite", "--runner", "DirectRunner",
                    "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"], check=True)
    return read_manifest(root)


def store_raw(root, out, store_size, reuse):
    """The PNG dataset at `root`, stored again as raw pixels at `store_size` by the producer's own code."""
    if reuse and os.path.exists(os.path.join(out, MANIFEST_NAME)):
        return read_manifest(out)
    from PIL import Image

    manifest = read_manifest(root)
    width, height = parse_size(store_size)
    manifest.spec = dataclasses.replace(manifest.spec, image_format="raw", store_width=width, store_height=height)
    store = Renderer(manifest.spec).store
    for info in manifest.splits.values():
        for k, shard in enumerate(info.shards):
            records = []
            with open(os.path.join(root, shard.path), "rb") as f:
                for record in framing.read_records(f, shard.path):
                    feature = schema.decode_example(record)
                    image = Image.open(io.BytesIO(feature[schema.IMAGE][0]))
                    records.append(framing.frame(schema.encode_example(store(image), feature[schema.TEXT][0].decode(),
                                                                       manifest.spec)))
            data = b"".join(records)
            os.makedirs(os.path.dirname(os.path.join(out, shard.path)), exist_ok=True)
            with open(os.path.join(out, shard.path), "wb") as f:
                f.write(data)
            info.shards[k] = ShardInfo(shard.path, len(records), len(data), hashlib.sha256(data).hexdigest())
    with open(os.path.join(out, MANIFEST_NAME), "w") as f:
        f.write(manifest.to_json())
    return manifest


def test_arrays(root, spec):
    """The test split as uint8 images (the stored size) and int labels, in order."""
    batches = list(channel("test", spec, 500, path=os.path.join(root, "test"), deterministic=True))
    return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])


def scores(probabilities, labels):
    right = np.argmax(probabilities, -1) == labels
    return right.all(-1).mean(), right.mean()


class TestCurve(keras.callbacks.Callback):
    """Every `every` steps and after each epoch: test accuracy vs training seconds (evaluation time
    excluded); stops training at the budget."""

    def __init__(self, images, labels, budget_s, every):
        super().__init__()
        self.images, self.labels, self.budget_s, self.every = images, labels, budget_s, every
        self.curve, self.train_s, self.steps = [], 0.0, 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.every and self.steps % self.every == 0:
            self._measure(f"step={self.steps}")

    def on_epoch_end(self, epoch, logs=None):
        self._measure(f"epoch={epoch + 1}")

    def _measure(self, where):
        self.train_s += time.perf_counter() - self.start
        seq, char = scores(self.model.predict(self.images, batch_size=500, verbose=0), self.labels)
        self.curve.append((self.train_s, seq, char))
        print(f"ours {where} train_s={self.train_s:.0f} test_sequence_accuracy={seq:.4f} "
              f"test_char_accuracy={char:.4f}", flush=True)
        if self.train_s > self.budget_s:
            self.model.stop_training = True
        self.start = time.perf_counter()


def run_ours(args, root, manifest, images, labels):
    import tensorflow as tf

    spec = manifest.spec
    train = channel("train", spec, args.batch_size, path=os.path.join(root, "train"), shuffle_buffer=4096,
                    seed=0).prefetch(tf.data.AUTOTUNE)
    steps = -(-manifest.split("train").examples // args.batch_size)
    model = ours.compile_model(ours.build_model(spec, scale=args.scale),
                               schedule(argparse.Namespace(epochs=args.epochs, learning_rate=args.learning_rate,
                                                           warmup_epochs=0.5), steps))
    curve = TestCurve(images, labels, args.budget_minutes * 60, args.eval_every)
    model.fit(train, epochs=args.epochs, callbacks=[curve], verbose=0)
    return curve


def main(argv=None):
    args = parse_args(argv)
    rows = args.rows.split(",")
    root = args.data or os.path.join(args.work, "data")
    manifest = read_manifest(root) if args.data else make_dataset(args, root)
    images, labels = test_arrays(root, manifest.spec)
    datasets = {"png": (root, manifest)}
    if "raw" in rows:
        raw_root = os.path.join(args.work, f"data-raw-{args.store_size}")
        datasets["raw"] = (raw_root, store_raw(root, raw_root, args.store_size, args.reuse))

    table, seed_seq, seed_s = [], None, None
    if "seed" in rows:
        files = seed_files(os.path.join(args.work, "seed_png"), args.seed_rounds, args.reuse)
        files = files[:args.seed_max_files or None]
        seed, seed_s, seed_n = run_seed(args, files)
        rgb = (images if images.shape[-1] == 3 else np.repeat(images, 3, axis=-1)) / 255
        seed_seq, seed_char = scores(seed.predict(rgb, batch_size=500, verbose=0), labels)
        print(f"seed train_s={seed_s:.0f} test_sequence_accuracy={seed_seq:.4f} test_char_accuracy={seed_char:.4f}", flush=True)
        table.append(("seed recipe", "PNG files 120x100", None, seed_s, seed_n * args.seed_epochs / seed_s, seed_seq,
                      seed_char, "-", "-"))
    rates = {}
    for name in ("png", "raw"):
        if name not in rows:
            continue
        data_root, data = datasets[name]
        spec = data.spec
        test_images = images if name == "png" else test_arrays(data_root, spec)[0]
        print(f"ours {name}: {spec.describe()}", flush=True)
        curve = run_ours(args, data_root, data, test_images, labels)
        ours_s, ours_seq, ours_char = curve.curve[-1]
        rates[name] = curve.steps * args.batch_size / ours_s
        reach = next((s for s, seq, _ in curve.curve if seq >= seed_seq), None) if seed_seq is not None else None
        target = next((s for s, seq, _ in curve.curve if seq >= args.target), None)
        shards = data.split("train").shards
        resized = ours.working_size(spec, args.scale) != spec.input_shape[:2]
        source = f"{name.upper()} {spec.store_width}x{spec.store_height}{', resized in the model' if resized else ''}"
        reach_text = ("-" if seed_s is None else "not reached" if reach is None
                      else f"{reach:.0f} s = {reach / seed_s:.2f}x seed")
        table.append((f"ours, {name}", source, sum(s.bytes for s in shards) / sum(s.records for s in shards),
                      ours_s, rates[name], ours_seq, ours_char, reach_text,
                      f"{target:.0f} s" if target is not None else "not reached"))
    print(f"\ntest split: {len(labels)} images, labels unseen in our training; mode {manifest.spec.mode}")
    print("| recipe | input | bytes/record | training wall s | examples/s | vs PNG | test sequence acc | test char acc "
          f"| time to seed's sequence acc | time to {args.target:.1%} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, source, size, s, rate, seq, char, reach_text, target_text in table:
        ratio = f"{rate / rates['png']:.2f}x" if "png" in rates and name.startswith("ours") else "-"
        size = "-" if size is None else f"{size:.0f}"
        print(f"| {name} | {source} | {size} | {s:.0f} | {rate:.0f} | {ratio} | {seq:.4f} | {char:.4f} | {reach_text} "
              f"| {target_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
