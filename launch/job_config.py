"""What a training job consists of, shared by `launch train` (SageMaker) and `launch local` (this machine).

The dataset prefix holds `dataset.json`, `train/` and, when it has one, `validation/` (shards only; a job
with a train channel alone trains without validation, as SageMaker allows). The shard channels
stream in the chosen input mode; the manifest rides in a small File-mode `meta` channel so that a Pipe
stream carries nothing but records (the trainer reads `SM_CHANNEL_META/dataset.json`).
"""
import argparse
import re
import sys
import time

from tfrecord import flags, manifest as dataset_manifest, storage
from tfrecord.errors import ManifestError, UserError
from tfrecord.manifest import MANIFEST_NAME, TRAIN, VALIDATION
from tfrecord.sagemaker import INPUT_MODES
from trainer import arguments

SHARD_CHANNELS = (TRAIN, VALIDATION)
META_CHANNEL = "meta"
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # SageMaker's TrainingJobName pattern
NAME_RULE = "1 to 63 letters, digits and hyphens, starting and ending with a letter or digit"  # JOB_NAME in words
# the trainer's flags that move its outputs out of the container folders the job uploads or syncs
CONTAINER_OUTPUTS = {"model-dir": "the model goes to the container's model dir (SM_MODEL_DIR), uploaded as "
                                  "<output-path>/<job>/output/model.tar.gz",
                     "output-data-dir": "outputs go to the container's output data dir (SM_OUTPUT_DATA_DIR), "
                                        "uploaded as output.tar.gz",
                     "checkpoint-dir": "checkpoints go to the container's checkpoint dir, synced with "
                                       "--checkpoint-path (launch local) or --checkpoint-s3-uri (launch train)"}


def add_job_arguments(p: argparse.ArgumentParser):
    p.add_argument("dataset", type=flags.existing_folder,
                   help="dataset prefix (s3://bucket/path or a local folder) holding dataset.json")
    p.add_argument("--output-path", required=True, type=flags.creatable_folder,
                   help="where <job>/output/model.tar.gz goes (s3:// or local)")
    p.add_argument("--job-name", help="SageMaker's rule: 1-63 letters, digits, hyphens; used once per output "
                                      "(default: captcha-<UTC time to the ms>; `launch train`: the base name, "
                                      "the SDK appends a timestamp)")
    p.add_argument("--input-mode", choices=INPUT_MODES, default="Pipe", help="for the shard channels")
    p.add_argument("--instance-count", type=flags.positive_int, default=1, help=">1 shards the objects by S3 key across hosts")
    p.add_argument("--shuffle-seed", type=int, help="ShuffleConfig: object order shuffled per epoch (train channel)")
    p.add_argument("--record-wrapper", choices=("None", "RecordIO"), default="None")
    p.add_argument("--compression", choices=("None", "Gzip"), default="None", help="of the S3 objects")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="trainer hyperparameter, e.g. --hp epochs=3 --hp batch-size=64 (repeatable)")


def job_name(args):
    """--job-name, or captcha-<UTC timestamp>; a name outside SageMaker's rule (which also keeps it one
    plain path component) is refused."""
    now = time.time()  # the default as the SageMaker SDK makes it: base name, UTC time to the millisecond
    name = args.job_name or time.strftime("captcha-%Y-%m-%d-%H-%M-%S-", time.gmtime(now)) + f"{int(now % 1 * 1000):03d}"
    if not JOB_NAME.fullmatch(name):
        raise UserError(f"--job-name {name!r}: not a SageMaker job name ({NAME_RULE}: ^{JOB_NAME.pattern}$)")
    return name


def sagemaker_name(text):
    """A `type=` for the name of a SageMaker training job, model or endpoint: JOB_NAME's rule (also one
    plain path component), checked before any AWS call."""
    if not JOB_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: not a SageMaker name ({NAME_RULE})")
    return text


def name_values(pairs, flag):
    """`NAME=VALUE` strings given with `flag` -> [(name, value)], in order; values stay strings."""
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{flag} {pair!r}: expected NAME=VALUE")
        out.append((name.strip(), value))
    return out


def hyperparameters(pairs):
    """`--hp` pairs -> {name: value} (strings, as SageMaker passes them; a leading -- on a name is dropped).
    A name that sets one of the trainer's output folders (CONTAINER_OUTPUTS, also spelt with _ or
    abbreviated, as argparse accepts) is refused: the job would upload an empty model, or write outside
    what it owns."""
    hps = {name.lstrip("-"): value for name, value in name_values(pairs, "--hp")}
    for name in hps:
        flag = name.replace("_", "-")
        for output, where in CONTAINER_OUTPUTS.items():
            if output.startswith(flag):
                raise UserError(f"--hp {name}: not settable in a job: {where}")
    arguments.check_hyperparameters(hps)  # as the trainer will parse them, before anything is created
    return hps


def read_manifest(dataset):
    """The dataset's manifest, read before anything is launched; it must have train shards."""
    manifest = dataset_manifest.read_manifest(dataset)
    if not manifest.split("train").shards:
        raise ManifestError(f"{dataset}: the dataset has no train shards")
    return manifest


def shard_channels(manifest):
    """The shard channels of a job on this dataset: train, and validation when the dataset has its shards."""
    return [split for split in SHARD_CHANNELS if split in manifest.splits and manifest.splits[split].shards]


def distribution(manifest, split, instance_count):
    """ShardedByS3Key across several instances (warning when the shards don't divide evenly)."""
    if instance_count <= 1:
        return "FullyReplicated"
    shards = len(manifest.split(split).shards)
    if shards % instance_count:
        print(f"warning: {split} has {shards} shards for {instance_count} instances: "
              f"hosts get {shards // instance_count} or {shards // instance_count + 1} shards each", file=sys.stderr)
    if shards < instance_count:
        raise UserError(f"{split} has {shards} shards, fewer than the {instance_count} instances")
    return "ShardedByS3Key"


def input_data_config(args, manifest):
    """{channel: (S3/local prefix, inputdataconfig.json entry)} for the shard channels and `meta`."""
    channels = {}
    for split in shard_channels(manifest):
        config = {"TrainingInputMode": args.input_mode,
                  # every host validates on all of the validation split (the chief's figures are the job's)
                  "S3DistributionType": distribution(manifest, split, args.instance_count if split == TRAIN else 1),
                  "RecordWrapperType": args.record_wrapper, "CompressionType": args.compression}
        if args.shuffle_seed is not None and split == TRAIN:
            config["ShuffleConfig"] = {"Seed": args.shuffle_seed}
        channels[split] = (storage.join(args.dataset, split) + ("/" if storage.is_s3(args.dataset) else ""), config)
    channels[META_CHANNEL] = (storage.join(args.dataset, MANIFEST_NAME),
                              {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                               "RecordWrapperType": "None", "CompressionType": "None"})
    return channels
