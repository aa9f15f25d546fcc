"""Beam job: render captchas in parallel into sharded TFRecords with a dataset.json manifest.

    python -m beam_jobs.generate --output s3://bucket/captchas -d --length 4 \
        --train-examples 100000 --test-examples 10000 --holdout-labels \
        --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2

Example i of a split goes to shard i % num_shards; its label and image depend only on
(seed, split, i), so any runner and worker count writes byte-identical shards. Shards are written
atomically by their own DoFn (Beam's WriteToTFRecord fails to finalize on the DaskRunner) and the
manifest is written last, so a dataset without dataset.json is never mistaken for a finished one.
"""
import argparse
import hashlib
import logging
import math
import os
import platform
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options, StandardOptions

from beam_jobs import storage
from beam_jobs.labels import PLAN_VERSION, PermutationLabels, UniformLabels
from beam_jobs.render import Renderer, example_seed
from tfrecord.errors import UserError, exits_on_user_error
from tfrecord.framing import frame
from tfrecord.manifest import MANIFEST_NAME, SPLITS, Manifest, ShardInfo, SplitInfo, shard_path
from tfrecord.schema import encode_example
from tfrecord.spec import ALPHABETS, IMAGE_FORMATS, CaptchaSpec, parse_size

CHUNK = 128  # examples rendered per work item: small enough to balance workers, large enough to amortise
EXAMPLES_PER_SHARD = 4096
MIN_SHARDS = 4  # so a split can be spread over several SageMaker hosts (ShardedByS3Key)
HOLDOUT_FRACTION = 0.1


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline generate", description=__doc__.split("\n")[0],
                                epilog="Other flags go to Beam's PipelineOptions (--runner, --direct_num_workers, --s3_endpoint_url, ...).")
    p.add_argument("--output", required=True, help="local directory or s3://bucket/prefix")
    p.add_argument("-d", "--digits", action="store_true", help="add 0-9 to the alphabet")
    p.add_argument("-l", "--lower", action="store_true", help="add a-z to the alphabet")
    p.add_argument("-u", "--upper", action="store_true", help="add A-Z to the alphabet")
    p.add_argument("--chars", default="", help="add these characters to the alphabet")
    p.add_argument("--length", "--npi", type=int, default=4, help="characters per captcha")
    p.add_argument("--width", type=int, default=0, help="image width (default 40 + 20 * length)")
    p.add_argument("--height", type=int, default=100)
    p.add_argument("--color-mode", choices=["L", "RGB"], default="L", help="grayscale (default) or RGB like the seed")
    p.add_argument("--font", action="append", default=[], help="TrueType font file (repeatable; default: captcha's)")
    p.add_argument("--image-format", choices=IMAGE_FORMATS, default="png", help="stored as PNG, or raw uint8 pixels")
    p.add_argument("--store-size", default="", metavar="WxH", help="store a box-filter downscale of the render (default: the render size)")
    p.add_argument("--train-examples", type=int, default=10000)
    p.add_argument("--validation-examples", type=int, default=1000)
    p.add_argument("--test-examples", type=int, default=1000)
    p.add_argument("--holdout-labels", action="store_true", help="no validation/test label string occurs in train")
    p.add_argument("-n", "--permutations", type=int, help="seed mode: every arrangement of distinct characters N times for train")
    p.add_argument("-t", "--test-ratio", type=float, default=0.2, help="seed mode: test rounds = max(1, int(N * ratio))")
    p.add_argument("--num-shards", type=int, help=f"shards per split (default: one per {EXAMPLES_PER_SHARD} examples, at least {MIN_SHARDS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset already at --output")
    args, beam_args = p.parse_known_args(argv)
    _reject_unknown_flags(beam_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        beam_args = [*beam_args, "--default_sdk_harness_log_level=WARNING"]  # workers' INFO chatter off
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner == "DaskRunner":  # Beam only knows it by its full name
        standard.runner = "apache_beam.runners.dask.dask_runner.DaskRunner"
    return args, options


def _reject_unknown_flags(beam_args):
    """Beam only warns about flags it does not know; a typo here should stop the job instead."""
    import apache_beam.runners.dask.dask_runner  # noqa: F401  registers the DaskRunner's options

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pending = [PipelineOptions]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # an option class re-registering a flag another class already added
    known = set(parser._option_string_actions)
    for arg in beam_args:
        flag = arg.split("=", 1)[0]
        if arg.startswith("-") and flag not in known:
            raise UserError(f"unknown flag {flag} (see --help)")


def build_plan(args):
    """-> (spec, label mode, {split: examples}, labels object, options recorded in the manifest)."""
    alphabet = "".join(ALPHABETS[k] for k in ("digits", "lower", "upper") if getattr(args, k))
    alphabet += "".join(c for c in dict.fromkeys(args.chars) if c not in alphabet)
    store_width, store_height = parse_size(args.store_size)
    spec = CaptchaSpec(alphabet=alphabet, length=args.length, width=args.width, height=args.height,
                       mode=args.color_mode, fonts=tuple(args.font), image_format=args.image_format,
                       store_width=store_width, store_height=store_height)
    if args.permutations is not None:
        if args.permutations < 1 or not 0 < args.test_ratio <= 1:
            raise UserError("--permutations must be >= 1 and --test-ratio in (0, 1]")
        rounds = {"train": args.permutations, "test": max(1, int(args.permutations * args.test_ratio))}
        labels = PermutationLabels(spec, args.seed, rounds)
        counts = {split: r * PermutationLabels.count(spec) for split, r in rounds.items()}
        mode, recorded = "permutations", {"permutations": args.permutations, "test_ratio": args.test_ratio}
    else:
        counts = {"train": args.train_examples, "validation": args.validation_examples, "test": args.test_examples}
        if min(counts.values()) < 0 or not any(counts.values()):
            raise UserError("example counts must be >= 0 and not all zero")
        if args.holdout_labels and not counts["train"]:
            raise UserError("--holdout-labels needs --train-examples > 0")
        labels = UniformLabels(spec, args.seed, HOLDOUT_FRACTION if args.holdout_labels else None)
        mode, recorded = "uniform", {"holdout_labels": args.holdout_labels, "holdout_fraction": HOLDOUT_FRACTION}
    counts = {split: n for split, n in counts.items() if n}
    missing = [f for f in spec.fonts if not os.path.isfile(f)]
    if missing:
        raise UserError(f"font file not found: {missing[0]}")
    if args.num_shards is not None and args.num_shards < 1:
        raise UserError("--num-shards must be >= 1")
    shards = {split: min(n, args.num_shards or max(MIN_SHARDS, math.ceil(n / EXAMPLES_PER_SHARD)))
              for split, n in counts.items()}
    recorded.update(examples=counts, num_shards=shards, plan_version=PLAN_VERSION)
    return spec, mode, counts, shards, labels, recorded


def chunks(split_shard, counts, shards):
    """(split, shard) -> (split, shard, num_shards, first, stop) over positions within the shard, CHUNK at a time."""
    split, shard = split_shard
    size = len(range(shard, counts[split], shards[split]))
    for first in range(0, size, CHUNK):
        yield split, shard, shards[split], first, min(size, first + CHUNK)


class RenderChunk(beam.DoFn):
    """Render one chunk of a shard: -> ((split, shard, num_shards), (first, framed records, count))."""

    def __init__(self, spec, seed, labels):
        self.spec, self.seed, self.labels = spec, seed, labels

    def setup(self):
        self.renderer = Renderer(self.spec)

    def process(self, item):
        split, shard, num_shards, first, stop = item
        records = []
        for position in range(first, stop):
            index = shard + position * num_shards
            text = self.labels.label(split, index)
            image = self.renderer.render(text, example_seed(self.seed, split, index))
            records.append(frame(encode_example(image, text, self.spec)))
        beam.metrics.Metrics.counter("captcha", f"{split}_examples").inc(len(records))
        yield (split, shard, num_shards), (first, b"".join(records), len(records))


class WriteShard(beam.DoFn):
    """Concatenate a shard's chunks in order and write the shard atomically: -> (split, ShardInfo)."""

    def __init__(self, output, options):
        self.output, self.options = output, options

    def setup(self):
        FileSystems.set_options(self.options)

    def process(self, element):
        (split, shard, num_shards), chunks = element
        chunks = sorted(chunks)
        data = b"".join(c[1] for c in chunks)
        relpath = shard_path(split, shard, num_shards)
        storage.write_atomic(self.output, relpath, data)
        logging.info("wrote %s (%d records)", relpath, sum(c[2] for c in chunks))
        yield split, ShardInfo(relpath, sum(c[2] for c in chunks), len(data), hashlib.sha256(data).hexdigest())


class WriteManifest(beam.DoFn):
    """Write dataset.json once every shard is written; refuses to describe a partial dataset."""

    def __init__(self, output, options, manifest):
        self.output, self.options, self.manifest = output, options, manifest

    def process(self, shard_infos):
        FileSystems.set_options(self.options)
        manifest = self.manifest
        for split, info in manifest.splits.items():
            info.shards = sorted((s for sp, s in shard_infos if sp == split), key=lambda s: s.path)
            expected = manifest.options["num_shards"][split]
            if len(info.shards) != expected or sum(s.records for s in info.shards) != info.examples:
                raise RuntimeError(f"split {split}: {len(info.shards)} of {expected} shards written; no manifest")
        storage.write_atomic(self.output, MANIFEST_NAME, manifest.to_json().encode())
        yield manifest.to_json()


def prepare_output(output, manifest, overwrite):
    """Refuse to clobber a different dataset; with --overwrite remove the old one, manifest first."""
    manifest_path = storage.join(output, MANIFEST_NAME)
    files = storage.list_files(output) if FileSystems.exists(output) else []
    if not files:
        return
    ours = {manifest_path} | {f for f in files if _in_layout(output, f)}
    foreign = sorted(set(files) - ours)
    if foreign:
        raise UserError(f"output {output} holds files that are not part of a dataset (e.g. {foreign[0]}); choose an empty location")
    if manifest_path in files:
        old = Manifest.from_json(storage.read(manifest_path).decode(), source=manifest_path)
        if _identity(old) == _identity(manifest):
            return  # the same dataset: re-running rewrites identical bytes
        if not overwrite:
            raise UserError(f"output {output} already holds a different dataset; pass --overwrite to replace it")
    elif not overwrite:
        raise UserError(f"output {output} holds shards but no {MANIFEST_NAME} (an interrupted run?); pass --overwrite to replace them")
    storage.delete([manifest_path] if manifest_path in files else [])
    storage.delete(sorted(set(files) - {manifest_path}))


def _in_layout(output, path):
    rel = path[len(output):].lstrip("/")
    top = rel.split("/", 1)[0]
    return top == storage.TMP_DIR or (top in SPLITS and rel.endswith(".tfrecord"))


def _identity(manifest):
    return manifest.spec, manifest.seed, manifest.mode, manifest.options


def _versions():
    from importlib.metadata import version

    return {"python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("apache-beam", "captcha", "pillow", "captcha-pipeline")}}


def run(argv=None):
    """Build and run the pipeline; returns the written Manifest."""
    args, options = parse_args(argv)
    spec, mode, counts, shards, labels, recorded = build_plan(args)
    output = args.output.rstrip("/")
    FileSystems.set_options(options)
    storage.check_writable(output, _s3_client(options) if storage.is_s3(output) else None)
    manifest = Manifest(spec=spec, seed=args.seed, mode=mode, options=recorded, versions=_versions(),
                        splits={s: SplitInfo(examples=n, shards=[]) for s, n in counts.items()})
    prepare_output(output, manifest, args.overwrite)

    start = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Shards" >> beam.Create([(split, shard) for split, n in shards.items() for shard in range(n)])
             | "Chunks" >> beam.FlatMap(chunks, counts, shards)
             | "Spread" >> beam.Reshuffle()
             | "Render" >> beam.ParDo(RenderChunk(spec, args.seed, labels))
             | "GroupByShard" >> beam.GroupByKey()
             | "WriteShard" >> beam.ParDo(WriteShard(output, options))
             | "AllShards" >> beam.combiners.ToList()
             | "WriteManifest" >> beam.ParDo(WriteManifest(output, options, manifest)))
    seconds = time.monotonic() - start
    if not storage.is_s3(output):
        storage.delete([p for p in storage.list_files(output) if _in_layout(output, p) and f"/{storage.TMP_DIR}/" in p])
    written = Manifest.from_json(storage.read(storage.join(output, MANIFEST_NAME)).decode())
    total = sum(counts.values())
    split_counts = ", ".join(f"{s}={n}" for s, n in counts.items())
    print(f"generate: {total} examples ({split_counts}) in {seconds:.1f} s = {total / seconds:.0f} examples/s -> {output}")
    return written


def _s3_client(options):
    import boto3

    s3 = options.view_as(S3Options)
    return boto3.client("s3", endpoint_url=s3.s3_endpoint_url, region_name=s3.s3_region_name,
                        aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key)


@exits_on_user_error
def main(argv=None):
    run(argv)
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main())
