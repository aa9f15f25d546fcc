"""Benchmark: captcha generation and label plans, all in one run on this machine.

Generation, digits-4 rendered at 120x100:
(a) the seed's approach: a serial loop writing one PNG file per captcha (`<label>_<uuid4>.png`, RGB)
(b) the bare render loop in one process: render + encode + frame, no I/O (the ceiling per core)
(c) the Beam job (DirectRunner) with 1 and 2 worker processes, writing sharded TFRecords (PNG)
(d) the same Beam job, 2 workers, storing raw pixels downscaled to 60x50 (`--image-format raw --store-size 60x50`)

Label plans, 62 characters (-d -l -u), one round per split: time to the first label of a split and peak
resident memory, each in a fresh process, for the materialising plan (plan version 1: every arrangement
and a shuffled index list in memory) against the computed one (version 2), where the first can run at all.

    .venv/bin/python bench/generate.py [--examples 20000] [--plan-lengths 4 5 6]
    .venv/bin/python bench/generate.py --examples 200 --plan-chars 10 --plan-lengths 3 4   # smoke run
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from beam_jobs import generate
from beam_jobs.render import Renderer, example_seed
from tfrecord.framing import frame
from tfrecord.manifest import read_manifest
from tfrecord.schema import encode_example
from tfrecord.spec import ALPHABETS, CaptchaSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARS_62 = ALPHABETS["digits"] + ALPHABETS["lower"] + ALPHABETS["upper"]
# per arrangement in the materialising plan (measured at length 4): a short str in a list and a shuffled int index
V1_BYTES_PER_ARRANGEMENT = 110

FIRST_LABEL = """
import itertools, json, random, re, sys, time
from beam_jobs.labels import PermutationLabels
from tfrecord.spec import CaptchaSpec
alphabet, length, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
if version == "1":  # the plan as it was: every arrangement, and one shuffled index list per split
    arrangements = ["".join(p) for p in itertools.permutations(alphabet, length)]
    order = list(range(len(arrangements)))
    random.Random("0/order/train").shuffle(order)
    label = arrangements[order[0] % len(arrangements)]
else:
    label = PermutationLabels(CaptchaSpec(alphabet=alphabet, length=length), 0, {"train": 1}).label("train", 0)
seconds = time.perf_counter() - start
peak_kb = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "label": label}))
"""


def labels(n):
    rng = random.Random(0)
    return ["".join(rng.choice("0123456789") for _ in range(4)) for _ in range(n)]


def seed_loop(n, out):
    """The seed's gen_captcha.py inner loop: ImageCaptcha(120, 100).write(label, '<label>_<uuid>.png')."""
    from captcha.image import ImageCaptcha

    captcha = ImageCaptcha(width=120, height=100)
    for text in labels(n):
        captcha.write(text, os.path.join(out, f"{text}_{uuid.uuid4()}.png"))
    return sum(e.stat().st_size for e in os.scandir(out))


def render_loop(n, _out):
    spec = CaptchaSpec()
    renderer = Renderer(spec)
    return sum(len(frame(encode_example(renderer.render(text, example_seed(0, "train", i)), text, spec)))
               for i, text in enumerate(labels(n)))


def beam_job(workers, *flags):
    def run(n, out):
        generate.run(["--output", out, "-d", "--length", "4", "--train-examples", str(n),
                      "--validation-examples", "0", "--test-examples", "0", *flags,
                      "--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)])
        return sum(s.bytes for s in read_manifest(out).split("train").shards)
    return run


def generation_table(examples):
    cases = [("(a) seed: serial loop, one PNG file each", seed_loop),
             ("(b) bare render loop, 1 process", render_loop),
             ("(c) Beam job, 1 worker", beam_job(1)),
             ("(c) Beam job, 2 workers", beam_job(2)),
             ("(d) Beam job, 2 workers, raw 60x50", beam_job(2, "--image-format", "raw", "--store-size", "60x50"))]
    rates, sizes = {}, {}
    for name, fn in cases:
        out = tempfile.mkdtemp(prefix="bench-generate-")
        start = time.perf_counter()
        sizes[name] = fn(examples, out) / examples
        rates[name] = examples / (time.perf_counter() - start)
        shutil.rmtree(out)
    a, b = rates[cases[0][0]], rates[cases[1][0]]
    print(f"\n{examples} examples each, digits-4 rendered at 120x100, {os.cpu_count()} cores\n")
    print(f"| {'case':<42} | {'examples/s':>10} | {'vs (a)':>7} | {'vs 2x(b)':>8} | {'bytes/example':>13} |")
    print(f"|{'-' * 44}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 15}|")
    for name, rate in rates.items():
        print(f"| {name:<42} | {rate:>10.0f} | {rate / a:>6.2f}x | {rate / (2 * b):>7.0%} | {sizes[name]:>13,.0f} |")
    c2, d = rates[cases[3][0]], rates[cases[4][0]]
    print(f"\ntargets: (c, 2 workers) >= 1.8x (a): {c2 / a:.2f}x {'met' if c2 / a >= 1.8 else 'MISSED'}; "
          f">= 85% of 2x (b): {c2 / (2 * b):.0%} {'met' if c2 / (2 * b) >= 0.85 else 'MISSED'}; "
          f"(d) raw 60x50 against (c) PNG, 2 workers: {d / c2:.2f}x the rate")


def first_label(alphabet, length, version):
    out = subprocess.run([sys.executable, "-c", FIRST_LABEL, alphabet, str(length), version], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    return json.loads(out.stdout)


def available_mb():
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("MemAvailable")).split()[1]) / 1024


def plan_table(alphabet, lengths):
    print(f"\nlabel plans: {len(alphabet)} characters, 1 round, first label of a split in a fresh process "
          f"({available_mb() / 1024:.0f} GB available)\n")
    print(f"| {'length':>6} | {'arrangements':>14} | {'v1: first label':>28} | {'v1: peak RSS':>12} | "
          f"{'v2: first label':>15} | {'v2: peak RSS':>12} |")
    print(f"|{'-' * 8}|{'-' * 16}|{'-' * 30}|{'-' * 14}|{'-' * 17}|{'-' * 14}|")
    for length in lengths:
        arrangements = math.perm(len(alphabet), length)
        new = first_label(alphabet, length, "2")
        needed_mb = arrangements * V1_BYTES_PER_ARRANGEMENT / 2**20
        if needed_mb < available_mb() / 2:
            old = first_label(alphabet, length, "1")
            v1 = (f"{old['seconds']:.2f} s ({old['seconds'] / new['seconds']:,.0f}x v2's)", f"{old['peak_mb']:,.0f} MB")
        else:
            v1 = (f"cannot run: needs ~{needed_mb / 1024:,.0f} GB", "-")
        print(f"| {length:>6} | {arrangements:>14,} | {v1[0]:>28} | {v1[1]:>12} | {new['seconds'] * 1000:>12.2f} ms | "
              f"{new['peak_mb']:>9,.0f} MB |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20000, help="examples per generation case")
    parser.add_argument("--plan-chars", type=int, default=62, help="alphabet size for the plan table (of -d -l -u)")
    parser.add_argument("--plan-lengths", type=int, nargs="+", default=[4, 5, 6])
    args = parser.parse_args()
    generation_table(args.examples)
    plan_table(CHARS_62[:args.plan_chars], args.plan_lengths)


if __name__ == "__main__":
    main()
