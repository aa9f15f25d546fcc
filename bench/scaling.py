"""Benchmark: training throughput on one host and on two, on this machine, one dataset, one run.

Rows (each a fresh trainer process, `taskset` pinning every host to a core of its own):
  (a) one host, one core: Keras `model.fit`, as the trainer trained before its custom loop (one pass per
      epoch; validation after each)
  (b) one host, one core: the trainer (`python -m trainer.train`, its custom loop)
  (c) two hosts, one core each: two trainers as SageMaker hosts (SM_HOSTS, MultiWorkerMirroredStrategy over
      loopback ports), each reading half of the shards
  (d) one host on both cores (no pinning), for scale
  (e) as (a), but `model.fit` draws `steps_per_epoch` batches from the loop's endless stream: the loop's
      step against fit's, with the same input
Figures: images/s while training (validation excluded), the median over epochs 2..N (epoch 1 traces the
step), over all hosts (the chief's examples_per_sec: every replica's examples over the epoch's time).
Data: digits-4 as `make demo` makes it (raw 60x50), 4 shards so that two hosts get 2 each.

    .venv/bin/python bench/scaling.py [--train-examples 20000] [--epochs 3] [--work bench-output/scaling]
    .venv/bin/python bench/scaling.py --train-examples 640 --epochs 2 --work /tmp/scaling-smoke   # smoke run
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from launch.local import free_ports
from tfrecord import sagemaker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 64
ROWS = {"a": "(a) one host, model.fit (before)", "b": "(b) one host, custom loop",
        "c": "(c) two hosts, custom loop", "d": "(d) one host, custom loop, 2 cores",
        "e": "(e) one host, model.fit, endless stream"}
FIT = """
import sys, time, keras
from tfrecord.channels import channel
from tfrecord.manifest import read_manifest
from trainer.model import build_model, compile_model
from trainer.loop import schedule
from trainer.train import parse_args
root, epochs, batch, stream = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "stream"
manifest = read_manifest(root)
spec, examples = manifest.spec, manifest.split("train").examples
args = parse_args(["--epochs", str(epochs), "--batch-size", str(batch)])
keras.utils.set_random_seed(0)
model = compile_model(build_model(spec, scale=args.scale), schedule(args, -(-examples // batch)))
train = channel("train", spec, batch, path=f"{root}/train", manifest=manifest, shuffle_buffer=args.shuffle_buffer, seed=0,
                repeat=stream)
steps = examples // batch if stream else None
examples = steps * batch if stream else examples
validation = channel("validation", spec, batch, path=f"{root}/validation", manifest=manifest, deterministic=True)

class Rate(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch, time.perf_counter()
    def on_test_begin(self, logs=None):
        print(f"epoch={self.epoch + 1} examples_per_sec={examples / (time.perf_counter() - self.start):.1f}", flush=True)

model.fit(train, validation_data=validation, epochs=epochs, steps_per_epoch=steps, callbacks=[Rate()], verbose=0)
"""


def make_dataset(work, examples):
    root = os.path.join(work, f"data-{examples}")
    if not os.path.exists(os.path.join(root, "dataset.json")):
        from beam_jobs import generate

        generate.run(["--output", root, "-d", "--length", "4", "--image-format", "raw", "--store-size", "60x50",
                      "--train-examples", str(examples), "--validation-examples", str(max(64, examples // 20)),
                      "--test-examples", "0", "--num-shards", "4", "--holdout-labels",
                      "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    return root


def trainer(root, out, epochs, cores, env=None):
    """A trainer process on `cores` ("0", "1", or None for all), writing under `out`."""
    command = [sys.executable, "-m", "trainer.train", "--train", f"{root}/train", "--validation", f"{root}/validation",
               "--model-dir", f"{out}/model", "--checkpoint-dir", f"{out}/checkpoints", "--output-data-dir",
               f"{out}/output", "--epochs", str(epochs), "--batch-size", str(BATCH)]
    return subprocess.Popen((["taskset", "-c", cores] if cores else []) + command, cwd=REPO, text=True,
                            env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def rate(output, label):
    """Median examples_per_sec of the metric lines after the first epoch."""
    rates = [float(r) for r in re.findall(r"^(?:\[\S+\] )?epoch=\d+ .*examples_per_sec=(\S+)$", output, re.MULTILINE)]
    if len(rates) < 2:
        raise SystemExit(f"{label}: fewer than 2 epochs measured:\n{output}")
    return statistics.median(rates[1:])


def finish(procs, label):
    outputs = [p.communicate()[0] for p in procs]
    for p, out in zip(procs, outputs):
        if p.returncode:
            raise SystemExit(f"{label} failed ({p.returncode}):\n{out}")
    return outputs[0]  # the chief's


def run_row(row, root, work, epochs):
    out = os.path.join(work, "runs", row)
    subprocess.run(["rm", "-rf", out], check=True)
    if row in "ae":
        proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", FIT, root, str(epochs), str(BATCH),
                                 "stream" if row == "e" else "pass"],
                                cwd=REPO, text=True, env={**os.environ, "PYTHONPATH": REPO},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return rate(finish([proc], ROWS[row]), ROWS[row])
    if row in "bd":
        return rate(finish([trainer(root, out, epochs, "0" if row == "b" else None)], ROWS[row]), ROWS[row])
    hosts = [sagemaker.host_name(i) for i in range(2)]
    workers = json.dumps({h: f"127.0.0.1:{p}" for h, p in zip(hosts, free_ports(2))})
    procs = [trainer(root, f"{out}/{h}", epochs, str(i), {"SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": h,
                                                         "CAPTCHA_PIPELINE_WORKERS": workers})
             for i, h in enumerate(hosts)]
    return rate(finish(procs, ROWS[row]), ROWS[row])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-examples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3, help="at least 2: epoch 1 is not counted")
    parser.add_argument("--work", default="bench-output/scaling")
    parser.add_argument("--rows", default="abcde")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2")
    root = make_dataset(args.work, args.train_examples)
    print(f"{args.train_examples} train examples (digits-4, raw 60x50, 4 shards), batch {BATCH}, {args.epochs} epochs, "
          f"{os.cpu_count()} cores", flush=True)
    rates = {}
    for row in args.rows:
        start = time.perf_counter()
        rates[row] = run_row(row, root, args.work, args.epochs)
        print(f"{ROWS[row]}: {rates[row]:.1f} images/s ({time.perf_counter() - start:.0f} s)", flush=True)
    base = rates.get("b")
    print("\n| run | hosts x cores | images/s | vs (b) |\n|---|---|---|---|")
    for row, value in rates.items():
        shape = {"c": "2 x 1", "d": "1 x 2"}.get(row, "1 x 1")
        print(f"| {ROWS[row]} | {shape} | {value:.1f} | {f'{value / base:.2f}x' if base else '-'} |")


if __name__ == "__main__":
    main()
