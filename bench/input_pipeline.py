"""Benchmark: feeding the model decoded batches of 64 from the same captchas (digits-4, rendered 120x100), one run.

(a) the seed's loader: a Python generator opening each PNG file with PIL and dividing by 255 (float batches)
(b) PNG records at 120x100 from files          (tfrecord.files.files_dataset)
(c) PNG records at 120x100 over Pipe           (tfrecord.pipe.pipe_dataset)
(d) raw records at 60x50 from files            (`generate --image-format raw --store-size 60x50`)
(e) raw records at 60x50 over Pipe

(b)-(e) yield uint8 batches as the trainer draws them: one repeat=True stream through a 2,048-record
shuffle buffer. The Pipe FIFOs are fed by the one Pipe agent (launch/pipe_agent.py) in a process of its
own, as SageMaker's agent runs outside the training process. Rates include the start-up.
CPU is this process's CPU time (every thread) per example, shown as the cores needed per 20,000
images/s: about what one GPU trains this model at. On a shared machine, --repeat N runs the rows in turn N
times and reports each row's median run (by examples/s), so a burst of other work does not decide a ratio.

    .venv/bin/python bench/input_pipeline.py [--examples 20000] [--passes 3] [--repeat 1] [--work bench-output/input]
    .venv/bin/python bench/input_pipeline.py --examples 640 --passes 1 --work /tmp/input-smoke   # smoke run
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from beam_jobs import generate
from tfrecord import sagemaker, schema
from tfrecord.files import files_dataset, shard_files
from tfrecord.framing import read_records
from tfrecord.manifest import read_manifest
from tfrecord.pipe import pipe_dataset

BATCH = 64
SHUFFLE = 2048
PER_GPU = 20000  # images/s one GPU trains this model at, roughly
ROWS = {
    "a": "(a) seed: PIL per PNG file, / 255",
    "b": "(b) PNG 120x100, files",
    "c": "(c) PNG 120x100, Pipe",
    "d": "(d) raw 60x50, files",
    "e": "(e) raw 60x50, Pipe",
}
AGENT = """
import json, os, sys, threading
from launch.pipe_agent import Progress, feed_pipe
channel, objects, config = json.loads(sys.argv[1])
feed_pipe(channel, [tuple(o) for o in objects], config, Progress(open(os.devnull, "w")), threading.Event(), [])
"""


def dataset(work, name, examples, *flags):
    """The same captchas (same options and seed) stored as PNG or raw; made once per size."""
    root = os.path.join(work, f"{name}-{examples}")
    if not os.path.exists(os.path.join(root, "dataset.json")):
        generate.run(["--output", root, "-d", "--length", "4", "--train-examples", str(examples),
                      "--validation-examples", "0", "--test-examples", "0", "--num-shards", "8", *flags,
                      "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    return root


def png_files(root, work):
    """The seed's layout, written once from the PNG records: <label>_<n>.png."""
    folder = os.path.join(work, f"png-files-{os.path.basename(root)}")
    if not os.path.isdir(folder):
        os.makedirs(folder)
        n = 0
        for shard in shard_files(os.path.join(root, "train")):
            with open(shard, "rb") as stream:
                for record in read_records(stream, shard):
                    feature = schema.decode_example(record)
                    with open(os.path.join(folder, f"{feature[schema.TEXT][0].decode()}_{n}.png"), "wb") as f:
                        f.write(feature[schema.IMAGE][0])
                    n += 1
    return sorted(glob.glob(os.path.join(folder, "*.png")))


def seed_loader(files, spec, passes):
    """The seed's generator: one file at a time through PIL, / 255."""
    for _ in range(passes):
        for i in range(0, len(files), BATCH):
            batch = files[i:i + BATCH]
            x = np.array([np.array(Image.open(f)) / 255.0 for f in batch], dtype=np.float32)
            y = np.array([[spec.alphabet.index(c) for c in os.path.basename(f).split("_")[0]] for f in batch])
            yield x, y


def start_agent(channel, root):
    """The Pipe agent for `channel` in its own process, streaming the train shards epoch after epoch; returns
    once it has made the first FIFO."""
    config = {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None",
              "CompressionType": "None"}
    for fifo in glob.glob(sagemaker.fifo_path(channel, "*")):  # an earlier agent's, in an earlier repeat or run
        os.unlink(fifo)
    path = os.path.join(sagemaker.config_dir(), "inputdataconfig.json")
    configs = json.load(open(path)) if os.path.exists(path) else {}
    with open(path, "w") as f:
        json.dump({**configs, channel: config}, f)
    objects = [(p, os.path.getsize(p)) for p in shard_files(os.path.join(root, "train"))]
    agent = subprocess.Popen([sys.executable, "-c", AGENT, json.dumps([channel, objects, config])])
    while not os.path.exists(sagemaker.fifo_path(channel, 0)):  # up and waiting, as SageMaker's is at the start
        time.sleep(0.01)
    return agent


def measure(batches, count):
    """(examples, examples/s, CPU seconds per example) over `count` examples, start-up included."""
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    batches = iter(batches)
    while n < count:
        n += len(next(batches)[0])
    return n, n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def run_row(row, roots, files, args):
    spec = read_manifest(roots[row]).spec if row != "a" else None
    count = args.examples * args.passes
    stream = dict(shuffle_buffer=SHUFFLE, seed=0, repeat=True)
    if row == "a":
        return measure(seed_loader(files, read_manifest(roots["b"]).spec, args.passes + 1), count)
    if row in "bd":
        return measure(files_dataset(os.path.join(roots[row], "train"), spec, BATCH, **stream), count)
    agent = start_agent(row, roots[row])
    try:
        return measure(pipe_dataset(row, spec, BATCH, **stream), count)
    finally:
        agent.terminate()
        agent.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20000, help="examples per dataset (one pass)")
    parser.add_argument("--passes", type=int, default=3, help="passes timed per row")
    parser.add_argument("--work", default="bench-output/input")
    parser.add_argument("--rows", default="abcde", help="which rows to run, e.g. de")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, rows in turn; each row's median run is shown")
    args = parser.parse_args(argv)
    png = dataset(args.work, "png", args.examples)
    raw = dataset(args.work, "raw", args.examples, "--image-format", "raw", "--store-size", "60x50")
    roots = {"a": png, "b": png, "c": png, "d": raw, "e": raw}
    files = png_files(png, args.work) if "a" in args.rows else None
    os.environ[sagemaker.ROOT_ENV] = os.path.abspath(os.path.join(args.work, "opt_ml"))
    for folder in (sagemaker.config_dir(), sagemaker.data_dir()):
        os.makedirs(folder, exist_ok=True)
    runs = {row: [] for row in args.rows}
    for _ in range(args.repeat):
        for row in args.rows:
            runs[row].append(run_row(row, roots, files, args))
    results = {row: sorted(r, key=lambda run: run[1])[len(r) // 2] for row, r in runs.items()}
    bytes_per_example = {row: sum(s.bytes for s in read_manifest(roots[row]).split("train").shards) / args.examples
                         for row in args.rows}
    base = results.get("a", (0, 0, 0))[1]
    median = f", median of {args.repeat} runs per row" if args.repeat > 1 else ""
    print(f"\n{args.examples} examples x {args.passes} passes{median}, {read_manifest(png).spec.describe()} / raw 60x50, "
          f"batches of {BATCH}, shuffle buffer {SHUFFLE}, {os.cpu_count()} cores\n")
    print(f"| {'reader':<34} | {'examples':>8} | {'examples/s':>10} | {'vs (a)':>7} | {'MB/s':>6} | "
          f"{'CPU us/example':>14} | {'cores per 20k/s':>15} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 12}|{'-' * 9}|{'-' * 8}|{'-' * 16}|{'-' * 17}|")
    for row, (n, rate, cpu) in results.items():
        vs = f"{rate / base:6.1f}x" if base else "      -"
        print(f"| {ROWS[row]:<34} | {n:>8} | {rate:>10.0f} | {vs:>7} | {rate * bytes_per_example[row] / 1e6:>6.1f} | "
              f"{cpu * 1e6:>14.1f} | {cpu * PER_GPU:>15.2f} |")
    if set("ade") <= set(args.rows):
        a, d, e = (results[row][1] for row in "ade")
        print(f"\ntargets: (d) >= 10x (a): {d / a:.1f}x {'met' if d >= 10 * a else 'MISSED'}; "
              f"(d) >= 40,000 examples/s: {d:.0f} {'met' if d >= 40000 else 'MISSED'}; "
              f"(e) >= 0.9x (d): {e / d:.2f}x {'met' if e >= 0.9 * d else 'MISSED'} "
              f"(Pipe read at {e * bytes_per_example['e'] / 1e6:.0f} MB/s)")


if __name__ == "__main__":
    main()
