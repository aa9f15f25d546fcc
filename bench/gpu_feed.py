"""Benchmark: can a pure-Python reader feed a GPU? Raw shards -> numpy batches -> the trainer's Keras model.

The reader uses no TensorFlow: `tfrecord.framing.read_records` (both CRCs checked) and the hand-written
Example decoder (`tfrecord.schema.decode_example`) over raw uint8 shards, `np.frombuffer` per image,
batches of `--batch-size`. The model is trainer/model.py's, compiled as the trainer compiles it, on
whichever Keras backend KERAS_BACKEND picks (TensorFlow here; JAX or PyTorch on a GPU machine without
TensorFlow). Per batch size and precision (float32, mixed_float16):

- train step: images/s of `train_on_batch` on batches already in memory: the accelerator's appetite;
- reader: images/s of the reader alone, and its CPU seconds per image;
- fed: images/s of training fed by the reader in a background thread (a queue of 8 batches);
- reader cores per appetite: the reader's CPU time per image x the train step's images/s: how many cores of
  this reader one accelerator of this speed needs.

    KERAS_BACKEND=tensorflow .venv/bin/python bench/gpu_feed.py [--data DIR] [--examples 20000] \
        [--batch-sizes 256 512 1024] [--precision float32 mixed_float16] [--steps 20]
    .venv/bin/python bench/gpu_feed.py --examples 512 --batch-sizes 64 --precision float32 --steps 3  # smoke

Without --data it writes a raw 60x50 digits-4 dataset of --examples train examples under --work first
(generate needs Apache Beam; a machine with only JAX or PyTorch takes one made elsewhere with --data).
"""
import argparse
import os
import queue
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfrecord import schema  # noqa: E402
from tfrecord.framing import read_records  # noqa: E402
from tfrecord.manifest import read_manifest  # noqa: E402

QUEUE = 8  # batches the reader thread may run ahead of the train step


def read_batches(root, spec, batch_size):
    """Endless (uint8 images [B, H, W, C], int32 labels [B, length]) from the train shards, pass after pass."""
    shards = [os.path.join(root, s.path) for s in read_manifest(root).split("train").shards]
    shape, images, labels = spec.input_shape, [], []
    while True:
        for shard in shards:
            with open(shard, "rb") as stream:
                for record in read_records(stream, shard):
                    features = schema.decode_example(record)
                    images.append(np.frombuffer(features[schema.IMAGE][0], np.uint8).reshape(shape))
                    labels.append(features[schema.LABEL])
                    if len(images) == batch_size:
                        yield np.stack(images), np.asarray(labels, np.int32)
                        images, labels = [], []


def reader_rate(root, spec, batch_size, images):
    """(images/s, CPU seconds per image) of the reader alone over `images` images."""
    batches, n = read_batches(root, spec, batch_size), 0
    start, cpu = time.perf_counter(), time.process_time()
    while n < images:
        n += len(next(batches)[0])
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def step_rate(model, batch, steps):
    """Images/s of `steps` train steps on one batch in memory, after one warm-up step (compilation)."""
    model.train_on_batch(*batch)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*batch)
    return steps * len(batch[0]) / (time.perf_counter() - start)


def fed_rate(model, root, spec, batch_size, steps):
    """Images/s of `steps` train steps, each on the next batch from the reader running in a thread."""
    batches, stop = queue.Queue(QUEUE), threading.Event()

    def produce():
        for batch in read_batches(root, spec, batch_size):
            while not stop.is_set():
                try:
                    batches.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    model.train_on_batch(*batches.get())
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*batches.get())
    rate = steps * batch_size / (time.perf_counter() - start)
    stop.set()
    thread.join()
    return rate


def make_dataset(work, examples):
    from beam_jobs import generate

    root = os.path.join(work, f"raw-{examples}")
    if not os.path.exists(os.path.join(root, "dataset.json")):
        generate.run(["--output", root, "-d", "--length", "4", "--image-format", "raw", "--store-size", "60x50",
                      "--train-examples", str(examples), "--validation-examples", "0", "--test-examples", "0",
                      "--num-shards", "8", "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="dataset root holding raw train shards (default: made under --work)")
    p.add_argument("--examples", type=int, default=20000, help="train examples of the dataset made without --data")
    p.add_argument("--work", default="bench-output/gpu_feed")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--precision", nargs="+", choices=("float32", "mixed_float16"), default=["float32", "mixed_float16"])
    p.add_argument("--steps", type=int, default=20, help="timed train steps per row")
    args = p.parse_args(argv)
    if min([args.examples, args.steps, *args.batch_sizes]) < 1:
        p.error("--examples, --steps and --batch-sizes must be at least 1")
    root = args.data or make_dataset(args.work, args.examples)
    spec = read_manifest(root).spec
    if spec.image_format != "raw":
        p.error(f"{root}: the pure-Python reader reads raw shards (`generate --image-format raw`), not {spec.image_format}")

    import keras

    from trainer.model import build_model, compile_model

    devices = ", ".join(str(d) for d in keras.distribution.list_devices()) if hasattr(keras, "distribution") else "?"
    print(f"\nKeras {keras.__version__}, backend {keras.backend.backend()}, devices: {devices}; {os.cpu_count()} cores; "
          f"{spec.describe()}; {args.steps} timed steps per row\n")
    print(f"| {'batch':>5} | {'precision':<13} | {'train step images/s':>19} | {'reader images/s':>15} | "
          f"{'reader CPU us/image':>19} | {'fed images/s':>12} | {'reader cores per appetite':>25} |")
    print(f"|{'-' * 7}|{'-' * 15}|{'-' * 21}|{'-' * 17}|{'-' * 21}|{'-' * 14}|{'-' * 27}|")
    for batch_size in args.batch_sizes:
        read, cpu = reader_rate(root, spec, batch_size, max(batch_size * 4, 4096))
        batch = next(read_batches(root, spec, batch_size))
        for precision in args.precision:
            keras.mixed_precision.set_global_policy(precision)
            keras.utils.set_random_seed(0)
            model = compile_model(build_model(spec), 1e-3)
            appetite = step_rate(model, batch, args.steps)
            fed = fed_rate(model, root, spec, batch_size, args.steps)
            print(f"| {batch_size:>5} | {precision:<13} | {appetite:>19,.0f} | {read:>15,.0f} | {cpu * 1e6:>19,.1f} | "
                  f"{fed:>12,.0f} | {appetite * cpu:>25.3g} |", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
