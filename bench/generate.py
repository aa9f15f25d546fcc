"""Benchmark: captcha generation, digits-4 at 120x100, all in one run on this machine.

(a) the seed's approach: a serial loop writing one PNG file per captcha (`<label>_<uuid4>.png`, RGB)
(b) the bare render loop in one process: render + encode + frame, no I/O (the ceiling per core)
(c) the Beam job (DirectRunner) with 1 and 2 worker processes, writing sharded TFRecords

    .venv/bin/python bench/generate.py [--examples 20000]
"""
import argparse
import itertools
import os
import random
import shutil
import tempfile
import time
import uuid

from beam_jobs import generate
from beam_jobs.render import Renderer, example_seed
from tfrecord.framing import frame
from tfrecord.schema import encode_example
from tfrecord.spec import CaptchaSpec


def labels(n):
    rng = random.Random(0)
    return ["".join(rng.choice("0123456789") for _ in range(4)) for _ in range(n)]


def seed_loop(n, out):
    """The seed's gen_captcha.py inner loop: ImageCaptcha(120, 100).write(label, '<label>_<uuid>.png')."""
    from captcha.image import ImageCaptcha

    captcha = ImageCaptcha(width=120, height=100)
    for text in labels(n):
        captcha.write(text, os.path.join(out, f"{text}_{uuid.uuid4()}.png"))


def render_loop(n, _out):
    spec = CaptchaSpec()
    renderer = Renderer(spec)
    for i, text in enumerate(labels(n)):
        frame(encode_example(renderer.render(text, example_seed(0, "train", i)), text, spec))


def beam_job(workers):
    def run(n, out):
        generate.run(["--output", out, "-d", "--length", "4", "--train-examples", str(n),
                      "--validation-examples", "0", "--test-examples", "0",
                      "--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)])
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20000)
    args = parser.parse_args()
    cases = [("(a) seed: serial loop, one PNG file each", seed_loop),
             ("(b) bare render loop, 1 process", render_loop),
             ("(c) Beam job, 1 worker", beam_job(1)),
             ("(c) Beam job, 2 workers", beam_job(2))]
    rates = {}
    for name, fn in cases:
        out = tempfile.mkdtemp(prefix="bench-generate-")
        start = time.perf_counter()
        fn(args.examples, out)
        rates[name] = args.examples / (time.perf_counter() - start)
        shutil.rmtree(out)
    a, b = rates[cases[0][0]], rates[cases[1][0]]
    print(f"\n{args.examples} examples each, digits-4 120x100, {os.cpu_count()} cores\n")
    print(f"| {'case':<42} | {'examples/s':>10} | {'vs (a)':>7} | {'vs 2x(b)':>8} |")
    print(f"|{'-' * 44}|{'-' * 12}|{'-' * 9}|{'-' * 10}|")
    for name, rate in rates.items():
        print(f"| {name:<42} | {rate:>10.0f} | {rate / a:>6.2f}x | {rate / (2 * b):>7.0%} |")
    c2 = rates[cases[3][0]]
    print(f"\ntargets: (c, 2 workers) >= 1.8x (a): {c2 / a:.2f}x {'met' if c2 / a >= 1.8 else 'MISSED'}; "
          f">= 85% of 2x (b): {c2 / (2 * b):.0%} {'met' if c2 / (2 * b) >= 0.85 else 'MISSED'}")


if __name__ == "__main__":
    main()
