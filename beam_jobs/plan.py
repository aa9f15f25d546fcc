"""The plan of a `generate` run: what each split holds, in how many shards, and what it will cost.

Shards: by default a split gets as many shards as keep each under TARGET_SHARD_BYTES (estimated from a
sample render with the real spec), and at least MIN_SHARDS, so a split can be spread over that many
hosts. Example i of a split goes to shard i % shards; a shard is rendered CHUNK examples at a time.
The driver creates at most SHARD_RANGES ranges of shard numbers per split and the pipeline enumerates
the shards in them, so the driver's memory does not grow with the number of shards.
"""
import dataclasses
import math
import time

from beam_jobs.labels import PermutationLabels, UniformLabels
from beam_jobs.progress import duration
from beam_jobs.render import DEFAULT_FONT_SIZES, Renderer, check_drawable, check_fonts, example_seed, font_sizes
from tfrecord.errors import UserError
from tfrecord.framing import frame
from tfrecord.manifest import MAX_SHARDS, PLAN_VERSION, TEST, TRAIN, VALIDATION
from tfrecord.schema import encode_example
from tfrecord.spec import ALPHABETS, CaptchaSpec, parse_length, parse_size

CHUNK = 128  # examples rendered per work item: small enough to balance workers, large enough to amortise
# SageMaker advises S3 objects of ~100-150 MB for FastFile and Pipe mode: few enough requests, small enough
# to spread a split over hosts. A shard is held in a worker's memory once while it is written.
TARGET_SHARD_BYTES = 128 * 10**6
MIN_SHARDS = 4  # so a split can be spread over several SageMaker hosts (ShardedByS3Key)
HOLDOUT_FRACTION = 0.1
SAMPLE_EXAMPLES = 24  # rendered before the job: sizes the shards, checks the spec renders, times a dry run
SHARD_RANGES = 64  # work items the driver creates per split, however many shards: its memory stays constant
LONG_RUN_SECONDS = 24 * 3600  # a run estimated to take longer prints its estimate first


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

    def shard_ranges(self):
        """(split, first, stop): shard numbers first..stop-1, at most SHARD_RANGES per split. The driver
        creates these; the shards themselves are enumerated inside the pipeline (shards_in)."""
        for split, n in self.shards.items():
            step = math.ceil(n / SHARD_RANGES)
            for first in range(0, n, step):
                yield split, first, min(n, first + step)

    def shards_in(self, shard_range):
        """(split, first, stop) -> (split, shard) for each of its shards, one at a time."""
        split, first, stop = shard_range
        for shard in range(first, stop):
            yield split, shard

    def shard_keys(self):
        """(split, shard) for every shard of every split, one at a time."""
        for shard_range in self.shard_ranges():
            yield from self.shards_in(shard_range)

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
    min_length, length = parse_length(args.length)
    spec = CaptchaSpec(alphabet=alphabet, length=length, min_length=min_length, width=args.width or 0, height=args.height,
                       mode=args.color_mode, fonts=tuple(args.font), image_format=args.image_format,
                       store_width=store_width, store_height=store_height)
    check_fonts(spec)
    sizes = font_sizes(spec)
    check_drawable(spec, sizes)
    if args.permutations is not None:
        rounds = {TRAIN: args.permutations, VALIDATION: args.validation_rounds,
                  TEST: max(1, int(args.permutations * args.test_ratio))}
        rounds = {split: r for split, r in rounds.items() if r}
        labels = PermutationLabels(spec, args.seed, rounds)
        counts = {split: r * PermutationLabels.count(spec) for split, r in rounds.items()}
        mode, options = "permutations", {"permutations": args.permutations, "test_ratio": args.test_ratio}
        if args.validation_rounds:  # recorded only when used: a dataset made without it keeps its options
            options["validation_rounds"] = args.validation_rounds
    else:
        if args.validation_rounds:
            raise UserError("--validation-rounds needs --permutations (-n)")
        counts = {TRAIN: args.train_examples, VALIDATION: args.validation_examples, TEST: args.test_examples}
        if not any(counts.values()):
            raise UserError("--train-examples, --validation-examples and --test-examples are all 0")
        if args.holdout_labels and not counts[TRAIN]:
            raise UserError("--holdout-labels needs --train-examples > 0")
        labels = UniformLabels(spec, args.seed, HOLDOUT_FRACTION if args.holdout_labels else None)
        mode, options = "uniform", {"holdout_labels": args.holdout_labels, "holdout_fraction": HOLDOUT_FRACTION}
    counts = {split: n for split, n in counts.items() if n}
    plan = Plan(spec, args.seed, mode, labels, counts, shards={}, options=options, sample=None)
    sample = measure(plan)
    # past MAX_SHARDS x TARGET_SHARD_BYTES, shards grow instead (the manifest lists each one)
    shards = {split: min(n, args.num_shards or min(MAX_SHARDS, max(MIN_SHARDS, math.ceil(n * sample.bytes / TARGET_SHARD_BYTES))))
              for split, n in counts.items()}
    options = {**options, "examples": counts, "num_shards": shards, "plan_version": PLAN_VERSION}
    if sizes != DEFAULT_FONT_SIZES:  # scaled to fit the height: recorded (dataset.json as before otherwise)
        options["font_sizes"] = list(sizes)
    return dataclasses.replace(plan, shards=shards, options=options, sample=sample)


def measure(plan):
    """Render the first examples of the plan's first split here: their time and framed size."""
    split, examples = next(iter(plan.examples.items()))
    renderer = Renderer(plan.spec)
    plan.record(renderer, split, 0)  # warm up: captcha loads its fonts on first use
    n = min(SAMPLE_EXAMPLES, examples)
    start = time.perf_counter()
    sizes = [len(plan.record(renderer, split, i)) for i in range(n)]
    return Sample(n, (time.perf_counter() - start) / n, sum(sizes) / n)


def estimated_seconds(plan, workers, examples=None):
    """Rendering time of `examples` (default: all of the plan's) on `workers` workers of one core each,
    from the sample rendered here; start-up not counted."""
    examples = sum(plan.examples.values()) if examples is None else examples
    return examples * plan.sample.seconds / workers


def long_run_notice(plan, workers):
    """The line printed before a run estimated to take more than LONG_RUN_SECONDS, else None."""
    seconds = estimated_seconds(plan, workers)
    if seconds <= LONG_RUN_SECONDS:
        return None
    total = sum(plan.examples.values())
    return (f"generate: estimated {duration(seconds)} on {workers} worker{'s' * (workers > 1)} for {total:,} examples "
            f"(~{_bytes(total * plan.sample.bytes)} in {sum(plan.shards.values()):,} shards); --dry-run prints the plan")


def describe(plan, workers):
    """The dry-run report: per split examples, shards, estimated bytes and time on `workers` workers."""
    s = plan.sample
    if plan.mode == "permutations":
        rounds = ", ".join(f"{split} {r}x" for split, r in plan.labels.rounds.items())
        labels = f"each of {PermutationLabels.count(plan.spec):,} arrangements of distinct characters ({rounds})"
    else:
        held_out = plan.options["holdout_labels"] and f", {plan.labels.held_out:,} held out from train"
        labels = f"uniform over {plan.labels.space:,} labels{held_out or ''}"
    scaled = plan.options.get("font_sizes")
    sizes = f", font sizes {', '.join(map(str, scaled))} (scaled to fit the height)" if scaled else ""
    rows = [("split", "examples", "shards", "~bytes/shard", "~bytes", f"~time on {workers} worker{'s' * (workers > 1)}")]
    for split, n in {**plan.examples, "total": sum(plan.examples.values())}.items():
        shards = plan.shards.get(split, sum(plan.shards.values()))
        rows.append((split, f"{n:,}", f"{shards:,}", _bytes(n * s.bytes / shards), _bytes(n * s.bytes),
                     duration(estimated_seconds(plan, workers, n))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join([
        f"dry run: {plan.spec.describe()}{sizes}; seed {plan.seed}; {labels} (plan version {PLAN_VERSION})",
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
