"""Benchmark: feeding decoded float batches of 64 (digits-4, 120x100) from the same records, one run.

(a) the seed's loader: a Python generator opening each PNG file with PIL and dividing by 255
(b) files_dataset over the local shards
(c) pipe_dataset over SageMaker-style FIFOs fed from the same shards

    .venv/bin/python bench/input_pipeline.py [--examples 20000] [--work bench-output/input]
"""
import argparse
import glob
import json
import os
import threading
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from beam_jobs import generate
from tfrecord import sagemaker
from tfrecord.manifest import read_manifest
from tfrecord.pipe import pipe_dataset
from tfrecord.files import files_dataset, shard_files

BATCH = 64


def dataset(work, examples):
    root = os.path.join(work, "data")
    if not os.path.exists(os.path.join(root, "dataset.json")):
        generate.run(["--output", root, "-d", "--length", "4", "--train-examples", str(examples),
                      "--validation-examples", "0", "--test-examples", "0", "--num-shards", "16",
                      "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    return root


def png_files(root, spec, work):
    """The seed's layout, written once from the same records: <label>_<n>.png."""
    folder = os.path.join(work, "png")
    if not os.path.isdir(folder):
        os.makedirs(folder)
        n = 0
        for record in tf.data.TFRecordDataset(shard_files(os.path.join(root, "train"))):
            example = tf.train.Example.FromString(record.numpy()).features.feature
            text = example["image/class/text"].bytes_list.value[0].decode()
            with open(os.path.join(folder, f"{text}_{n}.png"), "wb") as f:
                f.write(example["image/encoded"].bytes_list.value[0])
            n += 1
    return sorted(glob.glob(os.path.join(folder, "*.png")))


def seed_loader(files, spec):
    """The seed's generator: one file at a time through PIL, / 255, one-hot-free labels."""
    for i in range(0, len(files), BATCH):
        x = np.array([np.array(Image.open(f)) / 255.0 for f in files[i:i + BATCH]], dtype=np.float32)
        y = np.array([[spec.alphabet.index(c) for c in os.path.basename(f).split("_")[0]] for f in files[i:i + BATCH]])
        yield x, y


def feed_fifos(root, work):
    """Like SageMaker's agent for one epoch: create train_0, stream every shard into it, close."""
    os.environ[sagemaker.ROOT_ENV] = os.path.join(work, "opt_ml")
    os.makedirs(sagemaker.config_dir(), exist_ok=True)
    os.makedirs(sagemaker.data_dir(), exist_ok=True)
    with open(os.path.join(sagemaker.config_dir(), "inputdataconfig.json"), "w") as f:
        json.dump({"train": {"TrainingInputMode": "Pipe"}}, f)
    path = sagemaker.fifo_path("train", 0)
    if os.path.exists(path):
        os.unlink(path)

    def run():
        os.mkfifo(path)
        with open(path, "wb") as fifo:
            for shard in shard_files(os.path.join(root, "train")):
                with open(shard, "rb") as f:
                    fifo.write(f.read())
        os.unlink(path)
    threading.Thread(target=run, daemon=True).start()


def rate(batches):
    start, n = time.perf_counter(), 0
    for x, _ in batches:
        n += len(x)
    return n, n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--work", default="bench-output/input")
    args = parser.parse_args()
    root = dataset(args.work, args.examples)
    spec = read_manifest(root).spec
    files = png_files(root, spec, args.work)
    results = {}
    results["(a) seed: PIL per file, / 255"] = rate(seed_loader(files, spec))
    results["(b) files_dataset, local shards"] = rate(files_dataset(os.path.join(root, "train"), spec, BATCH))
    feed_fifos(root, args.work)
    results["(c) pipe_dataset, FIFO"] = rate(pipe_dataset("train", spec, BATCH))
    a, b = (r for _, r in list(results.values())[:2])
    print(f"\n{args.examples} examples, {spec.describe()}, float batches of {BATCH}, {os.cpu_count()} cores\n")
    print(f"| {'reader':<32} | {'examples':>8} | {'examples/s':>10} | {'vs (a)':>7} | {'vs (b)':>6} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 12}|{'-' * 9}|{'-' * 8}|")
    for name, (n, r) in results.items():
        print(f"| {name:<32} | {n:>8} | {r:>10.0f} | {r / a:>6.1f}x | {r / b:>5.2f}x |")
    c = list(results.values())[2][1]
    print(f"\ntargets: (b) >= 10x (a): {b / a:.1f}x {'met' if b / a >= 10 else 'MISSED'}; "
          f"(c) >= 0.9x (b): {c / b:.2f}x {'met' if c / b >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
