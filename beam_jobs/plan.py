"""The plan of a `generate` run: what each split holds, in how many shards, and what it will cost.

Shards: by default a split gets as many shards as keep each under TARGET_SHARD_BYTES (estimated from a
sample render with the real spec), and at least MIN_SHARDS, so a split can be spread over that many
hosts. Example i of a split goes to shard i % shards; a shard is rendered CHUNK examples at a time.
"""
import dataclasses
import math
import os
import time

import captcha.image
from PIL import ImageFont

from beam_jobs.labels import PermutationLabels, UniformLabels
from beam_jobs.progress import duration
from beam_jobs.render import Renderer, example_seed
from tfrecord.errors import UserError
from tfrecord.framing import frame
from tfrecord.manifest import PLAN_VERSION
from tfrecord.schema import encode_example
from tfrecord.spec import ALPHABETS, CaptchaSpec, parse_size

CHUNK = 128  # examples rendered per work item: small enough to balance workers, large enough to amortise
# SageMaker advises S3 objects of ~100-150 MB for FastFile and Pipe mode: few enough requests, small enough
# to spread a split over hosts. A shard is held in a worker's memory once while it is written.
TARGET_SHARD_BYTES = 128 * 10**6
MIN_SHARDS = 4  # so a split can be spread over several SageMaker hosts (ShardedByS3Key)
HOLDOUT_FRACTION = 0.1
SAMPLE_EXAMPLES = 24  # rendered before the job: sizes the shards, checks the spec renders, times a dry run


@dataclasses.dataclass(frozen=True)
class Sample:
    """The first examples of a split rendered here, one core: per example, seconds and framed bytes."""
    examples: int
    seconds: float
    bytes: float


@dataclasses.dataclass(frozen=True)
class Plan:
    spec: CaptchaSpec
    seed: int
    mode: str  # "uniform" or "permutations"
    labels: object  # UniformLabels or PermutationLabels: label(split, index)
    examples: dict  # split -> examples (splits with none are left out)
    shards: dict  # split -> shards
    options: dict  # how labels and shards were chosen, as recorded in dataset.json
    sample: Sample

    def record(self, renderer, split, index):
        """Example `index` of `split` as a framed TFRecord: a function of (plan, split, index) only."""
        text = self.labels.label(split, index)
        return frame(encode_example(renderer.render(text, example_seed(self.seed, split, index)), text, self.spec))

    def shard_keys(self):
        return [(split, shard) for split, n in self.shards.items() for shard in range(n)]

    def shard_examples(self, split, shard):
        return len(range(shard, self.examples[split], self.shards[split]))

    def chunks(self, key):
        """(split, shard) -> (split, shard, first, stop): positions within the shard, CHUNK at a time."""
        split, shard = key
        size = self.shard_examples(split, shard)
        for first in range(0, size, CHUNK):
            yield split, shard, first, min(size, first + CHUNK)

    def index(self, split, shard, position):
        return shard + position * self.shards[split]


def build_plan(args):
    """The Plan for generate's parsed flags; bad input raises UserError before any work."""
    alphabet = "".join(ALPHABETS[k] for k in ("digits", "lower", "upper") if getattr(args, k))
    alphabet += "".join(c for c in dict.fromkeys(args.chars) if c not in alphabet)
    store_width, store_height = parse_size(args.store_size)
    spec = CaptchaSpec(alphabet=alphabet, length=args.length, width=args.width, height=args.height,
                       mode=args.color_mode, fonts=tuple(args.font), image_format=args.image_format,
                       store_width=store_width, store_height=store_height)
    check_fonts(spec)
    if args.permutations is not None:
        if args.permutations < 1 or not 0 < args.test_ratio <= 1:
            raise UserError("--permutations must be >= 1 and --test-ratio in (0, 1]")
        rounds = {"train": args.permutations, "test": max(1, int(args.permutations * args.test_ratio))}
        labels = PermutationLabels(spec, args.seed, rounds)
        counts = {split: r * PermutationLabels.count(spec) for split, r in rounds.items()}
        mode, options = "permutations", {"permutations": args.permutations, "test_ratio": args.test_ratio}
    else:
        counts = {"train": args.train_examples, "validation": args.validation_examples, "test": args.test_examples}
        if min(counts.values()) < 0 or not any(counts.values()):
            raise UserError("example counts must be >= 0 and not all zero")
        if args.holdout_labels and not counts["train"]:
            raise UserError("--holdout-labels needs --train-examples > 0")
        labels = UniformLabels(spec, args.seed, HOLDOUT_FRACTION if args.holdout_labels else None)
        mode, options = "uniform", {"holdout_labels": args.holdout_labels, "holdout_fraction": HOLDOUT_FRACTION}
    counts = {split: n for split, n in counts.items() if n}
    if args.num_shards is not None and args.num_shards < 1:
        raise UserError("--num-shards must be >= 1")
    plan = Plan(spec, args.seed, mode, labels, counts, shards={}, options=options, sample=None)
    sample = measure(plan)
    shards = {split: min(n, args.num_shards or max(MIN_SHARDS, math.ceil(n * sample.bytes / TARGET_SHARD_BYTES)))
              for split, n in counts.items()}
    options = {**options, "examples": counts, "num_shards": shards, "plan_version": PLAN_VERSION}
    return dataclasses.replace(plan, shards=shards, options=options, sample=sample)


def check_fonts(spec):
    """Refuse fonts that are missing, not fonts, or cannot draw every character of the alphabet.

    captcha draws each character with a font picked at random, so every font must have every character.
    A character missing from a font's character map is drawn as its .notdef glyph (a box, or nothing).
    """
    for path in spec.fonts or captcha.image.DEFAULT_FONTS:
        if not os.path.isfile(path):
            raise UserError(f"font file not found: {path}")
        try:
            font = ImageFont.truetype(path, 50)
        except OSError as e:
            raise UserError(f"--font {path}: not a font ({e})") from None
        missing = _glyph(font, "\uffff")  # a noncharacter: never in a character map
        cannot = [c for c in spec.alphabet if _glyph(font, c) in (missing, None)]
        if cannot:
            raise UserError(f"font {os.path.basename(path)} cannot draw {''.join(cannot)!r}; "
                            "choose other characters or pass --font files that have them")


def _glyph(font, char):
    """The bitmap `font` draws for `char`, or None if it draws nothing."""
    mask = font.getmask(char)
    ink = bytes(mask)
    return (mask.size, ink) if any(ink) else None


def measure(plan):
    """Render the first examples of the plan's first split here: their time and framed size."""
    split, examples = next(iter(plan.examples.items()))
    renderer = Renderer(plan.spec)
    plan.record(renderer, split, 0)  # warm up: captcha loads its fonts on first use
    n = min(SAMPLE_EXAMPLES, examples)
    start = time.perf_counter()
    sizes = [len(plan.record(renderer, split, i)) for i in range(n)]
    return Sample(n, (time.perf_counter() - start) / n, sum(sizes) / n)


def describe(plan, workers):
    """The dry-run report: per split examples, shards, estimated bytes and time on `workers` workers."""
    s = plan.sample
    if plan.mode == "permutations":
        rounds = ", ".join(f"{split} {r}x" for split, r in plan.labels.rounds.items())
        labels = f"each of {PermutationLabels.count(plan.spec):,} arrangements of distinct characters ({rounds})"
    else:
        held_out = plan.options["holdout_labels"] and f", {plan.labels.held_out:,} held out from train"
        labels = f"uniform over {plan.labels.space:,} labels{held_out or ''}"
    rows = [("split", "examples", "shards", "~bytes/shard", "~bytes", f"~time on {workers} worker{'s' * (workers > 1)}")]
    for split, n in {**plan.examples, "total": sum(plan.examples.values())}.items():
        shards = plan.shards.get(split, sum(plan.shards.values()))
        rows.append((split, f"{n:,}", f"{shards:,}", _bytes(n * s.bytes / shards), _bytes(n * s.bytes),
                     duration(n * s.seconds / workers)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join([
        f"dry run: {plan.spec.describe()}; seed {plan.seed}; {labels} (plan version {PLAN_VERSION})",
        *table,
        f"estimated from {s.examples} examples rendered here: {s.seconds * 1000:.1f} ms and {s.bytes:,.0f} bytes each "
        "(one core per worker, start-up not counted)",
        "nothing written"])


def _bytes(n):
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.1f} {units[i]}" if i else f"{n:.0f} B"
