"""Beam job: render captchas in parallel into sharded TFRecords with a dataset.json manifest.

    python -m beam_jobs.generate --output s3://bucket/captchas -d --length 4 \
        --train-examples 100000 --test-examples 10000 --holdout-labels \
        --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2

The plan (beam_jobs/plan.py; `--dry-run` prints it) gives each split's examples and shards: example i
of a split goes to shard i % num_shards, and its label and image depend only on (seed, split, i), so
any runner and worker count writes byte-identical shards. Each chunk of a shard is rendered and written
to a temp part beside the shard; only the parts' names are grouped per shard, and the shard is streamed
from its parts, so memory is bounded by the work in flight, not the dataset, and each shard appears as
soon as its chunks are done. Shards are written atomically by their own DoFn (Beam's WriteToTFRecord fails
to finalize on the DaskRunner) and the manifest is written last, so a dataset without dataset.json is
never mistaken for a finished one.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, WorkerOptions

from beam_jobs import output as outputs
from beam_jobs import worker_log
from beam_jobs.plan import MIN_SHARDS, TARGET_SHARD_BYTES, build_plan, describe, long_run_notice
from beam_jobs.progress import ProgressBar, Reporter
from beam_jobs.render import Renderer
from tfrecord import flags, quiet, storage
from tfrecord.errors import SpecError, UserError, exits_on_user_error
from tfrecord.manifest import MANIFEST_NAME, MAX_SHARDS, Manifest, ShardInfo, SplitInfo, read_manifest, shard_path
from tfrecord.streams import BLOCK_SIZE
from tfrecord.spec import IMAGE_FORMATS, MODES, CaptchaSpec, default_width, parse_length

# Beam's SDK harness warns on every worker start about things this job does not use (a main session,
# flags the runner itself added); real warnings from every other module stay on.
QUIET_WORKER_LOGGERS = {"__main__": "ERROR", "apache_beam.options.pipeline_options": "ERROR"}


def length_range(text):
    """A `type=` for --length: a positive N (the flag layer's check), or a range MIN-MAX (tfrecord.spec.parse_length);
    kept as text."""
    if "-" not in text:
        flags.positive_int(text)
        return text
    try:
        parse_length(text)
    except SpecError:
        raise argparse.ArgumentTypeError(f"must be N or MIN-MAX with 1 <= MIN <= MAX, e.g. 4-6 (got {text})") from None
    return text


def parse_args(argv):
    spec = {f.name: f.default for f in dataclasses.fields(CaptchaSpec)}  # the defaults live in the spec
    p = flags.ArgumentParser(prog="captcha-pipeline generate", description=__doc__.split("\n")[0],
                             epilog="Other flags go to Beam's PipelineOptions (--runner, --direct_num_workers, --s3_endpoint_url, ...).")
    p.add_argument("--output", required=True, type=flags.creatable_folder, help="local directory or s3://bucket/prefix")
    p.add_argument("-d", "--digits", action="store_true", help="add 0-9 to the alphabet")
    p.add_argument("-l", "--lower", action="store_true", help="add a-z to the alphabet")
    p.add_argument("-u", "--upper", action="store_true", help="add A-Z to the alphabet")
    p.add_argument("--chars", default="", help="add these characters to the alphabet")
    p.add_argument("--length", "--npi", type=length_range, default=str(spec["length"]), metavar="N|MIN-MAX",
                   help="characters per captcha, or a range (each example's length uniform in it, then its characters)")
    p.add_argument("--width", type=flags.positive_int, default=None,
                   help=f"image width (default {default_width(0)} + {default_width(1) - default_width(0)} * the longest length)")
    p.add_argument("--height", type=flags.positive_int, default=spec["height"])
    p.add_argument("--color-mode", choices=sorted(MODES), default=spec["mode"], help="grayscale (default) or RGB like the seed")
    p.add_argument("--font", action="append", default=[], type=flags.regular_file,
                   help="TrueType font file (repeatable; default: captcha's)")
    p.add_argument("--image-format", choices=IMAGE_FORMATS, default=spec["image_format"], help="stored as PNG, or raw uint8 pixels")
    p.add_argument("--store-size", default="", metavar="WxH", help="store a box-filter downscale of the render (default: the render size)")
    p.add_argument("--train-examples", type=flags.non_negative_int, default=10000)
    p.add_argument("--validation-examples", type=flags.non_negative_int, default=1000)
    p.add_argument("--test-examples", type=flags.non_negative_int, default=1000)
    p.add_argument("--holdout-labels", action="store_true", help="no validation/test label string occurs in train")
    p.add_argument("-n", "--permutations", type=flags.positive_int, help="seed mode: every arrangement of distinct characters N times for train")
    p.add_argument("-t", "--test-ratio", type=flags.fraction, default=0.2, help="seed mode: test rounds = max(1, int(N * ratio))")
    p.add_argument("--validation-rounds", type=flags.non_negative_int, default=0, help="seed mode: a validation "
                   "split of every arrangement this many times (default 0: none, as the seed had)")
    p.add_argument("--num-shards", type=flags.at_least(1, most=MAX_SHARDS, why=" per split"), help=f"shards per split (default: enough for <= {TARGET_SHARD_BYTES // 10**6} MB "
                   f"each, at least {MIN_SHARDS})")
    p.add_argument("--seed", type=flags.seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset already at --output")
    p.add_argument("--dry-run", action="store_true", help="print the plan with estimated size and time; write nothing "
                   "(workers: --num_workers if given, else --direct_num_workers)")
    args, beam_args = p.parse_known_args(argv)
    _check_beam_flags(beam_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        beam_args = [*beam_args, "--default_sdk_harness_log_level=WARNING"]  # workers' INFO chatter off
    if not any(a.startswith("--sdk_harness_log_level_overrides") for a in beam_args):
        beam_args = [*beam_args, f"--sdk_harness_log_level_overrides={json.dumps(QUIET_WORKER_LOGGERS)}"]
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner == "DaskRunner":  # Beam only knows it by its full name
        standard.runner = "apache_beam.runners.dask.dask_runner.DaskRunner"
    return args, options


def _check_beam_flags(beam_args):
    """Beam only warns about flags it does not know and takes any number of workers: a typo, a value of
    the wrong kind or a negative worker count stops the job instead, in one line."""
    import apache_beam.runners.dask.dask_runner  # noqa: F401  registers the DaskRunner's options

    parser = flags.ArgumentParser(add_help=False, allow_abbrev=False)
    pending = [PipelineOptions]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # an option class re-registering a flag another class already added
    known, unknown = parser.parse_known_args(beam_args)
    if unknown:
        what = "flag" if unknown[0].startswith("-") else "argument"
        raise UserError(f"unknown {what} {unknown[0].split('=', 1)[0]} (see --help)")
    for name in ("direct_num_workers", "num_workers", "max_num_workers"):
        value = getattr(known, name, None)
        if value is not None and value < 0:
            raise UserError(f"--{name}: must be at least 0 (got {value})")


def part_path(split, shard, num_shards, first):
    """Where a chunk's records wait for their shard, relative to the output: a temp name beside the shard
    (`.<shard name>.part<first>.<32 hex>.tmp`, which `beam_jobs.output.is_temp` knows, so a run that dies
    leaves nothing the next run does not clean). The name depends only on the chunk, so a retried chunk
    rewrites its own part instead of leaving another."""
    folder, name = shard_path(split, shard, num_shards).rsplit("/", 1)
    tag = hashlib.sha256(f"{folder}/{name}:{first}".encode()).hexdigest()[:32]
    return f"{folder}/.{name}.part{first:05d}.{tag}.tmp"


class RenderChunk(beam.DoFn):
    """(split, shard, first, stop) -> ((split, shard), (first, part, count)): render the chunk's examples and
    write their framed records to the part `part_path` names (atomically, like every file we write); only
    that location goes on, so what Beam shuffles and holds is a few bytes per chunk, never images."""

    def __init__(self, plan, output, options, progress_dir=None):
        self.plan, self.output, self.options, self.progress_dir = plan, output, options, progress_dir
        self.examples = {split: Metrics.counter("captcha", f"{split}_examples") for split in plan.examples}

    def setup(self):
        use_s3_options(self.options)
        self.renderer, self.report = Renderer(self.plan.spec), Reporter(self.progress_dir)

    def process(self, chunk):
        split, shard, first, stop = chunk
        records = [self.plan.record(self.renderer, split, self.plan.index(split, shard, p)) for p in range(first, stop)]
        relative = part_path(split, shard, self.plan.shards[split], first)
        part = outputs.shard_uri(self.output, relative)
        try:
            storage.write_atomic(part, b"".join(records))
        except UserError as error:  # a full disk, an endpoint gone: the user knows the shard, not its part
            target = outputs.shard_uri(self.output, shard_path(split, shard, self.plan.shards[split]))
            raise type(error)(str(error).replace(part, target)) from None
        self.examples[split].inc(len(records))
        self.report.add("examples", len(records))
        yield (split, shard), (first, relative, len(records))

    def finish_bundle(self):
        self.report.flush()


def join_chunks(key, chunks):
    """((split, shard), [(first, part, count), ...]) -> (split, shard, its parts in order, its record count)."""
    chunks = sorted(chunks)
    return (*key, [c[1] for c in chunks], sum(c[2] for c in chunks))


class RenderShards(beam.PTransform):
    """Render every example of a plan into parts at `output`: -> (split, shard, its parts in order, records),
    one per shard. Memory is bounded by the chunks in flight: no rendered byte passes through the shuffle."""

    def __init__(self, plan, output, options, progress_dir=None):
        super().__init__()
        self.plan, self.output, self.options, self.progress_dir = plan, output, options, progress_dir

    def expand(self, pbegin):
        render = RenderChunk(self.plan, self.output, self.options, self.progress_dir)
        return (pbegin
                | "ShardRanges" >> beam.Create(list(self.plan.shard_ranges()))  # (split, first, stop): a few per split
                | "Shards" >> beam.FlatMap(self.plan.shards_in)  # (split, shard)
                | "Chunks" >> beam.FlatMap(self.plan.chunks)  # (split, shard, first, stop): positions in the shard
                | "Spread" >> beam.Reshuffle()  # the same, spread over the workers
                | "Render" >> beam.ParDo(render)  # ((split, shard), (first, part, count)); the records are in the part
                | "GroupByShard" >> beam.GroupByKey()  # ((split, shard), [(first, part, count), ...])
                | "Join" >> beam.MapTuple(join_chunks))  # (split, shard, [part, ...] in order, records)


class JoinedParts:
    """The files at `uris`, one after another, as one stream with `.read(n)` (n bytes unless at the end, as
    a multipart upload needs); `size` and `sha256` are of the bytes read so far."""

    def __init__(self, uris):
        self.uris, self.current = iter(uris), None
        self.size, self.sha256 = 0, hashlib.sha256()

    def read(self, n=-1):
        pieces, wanted = [], n if n is not None and n >= 0 else float("inf")
        while wanted > 0:
            if self.current is None:
                uri = next(self.uris, None)
                if uri is None:
                    break
                self.current = storage.open(uri)
            piece = self.current.read(min(wanted, BLOCK_SIZE))
            if not piece:
                self.current.close()
                self.current = None
                continue
            pieces.append(piece)
            wanted -= len(piece)
        data = b"".join(pieces)
        self.size += len(data)
        self.sha256.update(data)
        return data


class WriteShard(beam.DoFn):
    """(split, shard, [part, ...], records) -> (split, ShardInfo): stream the parts in order into the shard
    (written atomically; size and sha256 counted on the way), then delete them."""

    def __init__(self, plan, output, options, progress_dir=None):
        self.plan, self.output, self.options, self.progress_dir = plan, output, options, progress_dir

    def setup(self):
        use_s3_options(self.options)
        self.report = Reporter(self.progress_dir)

    def process(self, element):
        split, shard, parts, records = element
        relpath = shard_path(split, shard, self.plan.shards[split])
        uris = [outputs.shard_uri(self.output, part) for part in parts]
        data = JoinedParts(uris)
        storage.write_stream(outputs.shard_uri(self.output, relpath), data)
        storage.delete(uris)
        self.report.add("shards", 1)
        yield split, ShardInfo(relpath, records, data.size, data.sha256.hexdigest())

    def finish_bundle(self):
        self.report.flush()


class WriteManifest(beam.DoFn):
    """[(split, ShardInfo), ...] -> dataset.json's text, written once every shard is; refuses a partial dataset.
    `manifest` is the dataset without its shards; the one written is a copy that lists them."""

    def __init__(self, output, options, manifest):
        self.output, self.options, self.manifest = output, options, manifest

    def process(self, shard_infos):
        use_s3_options(self.options)
        splits = {}
        for split, info in self.manifest.splits.items():
            shards = sorted((s for sp, s in shard_infos if sp == split), key=lambda s: s.path)
            expected = self.manifest.options["num_shards"][split]
            if len(shards) != expected or sum(s.records for s in shards) != info.examples:
                raise RuntimeError(f"split {split}: {len(shards)} of {expected} shards written; no manifest")
            splits[split] = SplitInfo(examples=info.examples, shards=shards)
        text = dataclasses.replace(self.manifest, splits=splits).to_json()
        storage.write_atomic(outputs.shard_uri(self.output, MANIFEST_NAME), text.encode())
        yield text


class WriteDataset(beam.PTransform):
    """Render a plan into shards at `output`, then its dataset.json: -> dataset.json's text, once."""

    def __init__(self, plan, output, options, manifest, progress_dir=None):
        super().__init__()
        self.plan, self.output, self.options, self.manifest = plan, output, options, manifest
        self.progress_dir = progress_dir

    def expand(self, pbegin):
        return (pbegin
                | "RenderShards" >> RenderShards(self.plan, self.output, self.options, self.progress_dir)  # (split, shard, [part, ...], records)
                | "WriteShard" >> beam.ParDo(WriteShard(self.plan, self.output, self.options, self.progress_dir))  # (split, ShardInfo)
                | "AllShards" >> beam.combiners.ToList()  # [(split, ShardInfo), ...]
                | "WriteManifest" >> beam.ParDo(WriteManifest(self.output, self.options, self.manifest)))  # JSON text


def _versions():
    from importlib.metadata import version

    return {"python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("apache-beam", "captcha", "pillow", "captcha-pipeline")}}


def workers(options):
    """How many workers render in parallel, for the dry run's estimate."""
    if options.view_as(WorkerOptions).num_workers:
        return options.view_as(WorkerOptions).num_workers
    direct = options.view_as(DirectOptions)
    if options.view_as(StandardOptions).runner in (None, "DirectRunner") and direct.direct_running_mode != "in_memory":
        return direct.direct_num_workers or os.cpu_count()
    return 1


def run(argv=None):
    """Build and run the pipeline; returns the written Manifest (None for a dry run)."""
    args, options = parse_args(argv)
    plan = build_plan(args)
    if args.dry_run:
        print(describe(plan, workers(options)))
        return None
    notice = long_run_notice(plan, workers(options))
    if notice:
        print(notice, flush=True)
    output = storage.root(args.output)
    use_s3_options(options)
    storage.check_writable(output)
    manifest = Manifest(spec=plan.spec, seed=plan.seed, mode=plan.mode, options=plan.options, versions=_versions(),
                        splits={s: SplitInfo(examples=n, shards=[]) for s, n in plan.examples.items()})
    with outputs.hold(output):  # for the whole run: a second run into `output` is refused
        outputs.prepare(output, manifest, args.overwrite)
        start = time.monotonic()
        total = sum(plan.examples.values())
        with quiet.stderr_without(worker_log.start_up_line) as stderr:  # printed by each worker process
            with ProgressBar(total, sum(plan.shards.values()), stream=stderr) as progress:
                try:
                    with beam.Pipeline(options=options) as pipeline:
                        _ = pipeline | "WriteDataset" >> WriteDataset(plan, output, options, manifest, progress.directory)
                except BaseException:
                    with contextlib.suppress(Exception):  # the run's own error is the one to report
                        outputs.remove_temps(output)  # the parts of shards not yet written
                    raise
        seconds = time.monotonic() - start
        written = read_manifest(output)
    split_counts = ", ".join(f"{s}={n}" for s, n in plan.examples.items())
    print(f"generate: {total} examples ({split_counts}) in {seconds:.1f} s = {total / seconds:.0f} examples/s -> {output}")
    return written


def use_s3_options(options):
    """Beam's S3 flags (--s3_endpoint_url, ...) configure our storage, on the driver and in each worker."""
    storage.configure(storage.s3_settings(options.get_all_options()))


@exits_on_user_error
def main(argv=None):
    run(argv)
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main())
