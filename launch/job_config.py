"""What a training job consists of, shared by `launch train` (SageMaker) and `launch local` (this machine).

The dataset prefix holds `dataset.json`, `train/` and `validation/` (shards only). The shard channels
stream in the chosen input mode; the manifest rides in a small File-mode `meta` channel so that a Pipe
stream carries nothing but records (the trainer reads `SM_CHANNEL_META/dataset.json`).
"""
import argparse
import sys
import time

from tfrecord import manifest as dataset_manifest, storage
from tfrecord.errors import ManifestError, UserError
from tfrecord.manifest import MANIFEST_NAME
from tfrecord.sagemaker import INPUT_MODES

SHARD_CHANNELS = ("train", "validation")
META_CHANNEL = "meta"


def add_job_arguments(p: argparse.ArgumentParser):
    p.add_argument("dataset", help="dataset prefix (s3://bucket/path or a local folder) holding dataset.json")
    p.add_argument("--output-path", required=True, help="where <job>/output/model.tar.gz goes (s3:// or local)")
    p.add_argument("--job-name", help="default: captcha-<UTC timestamp> (`launch train`: the base name, "
                                      "the SDK appends a timestamp)")
    p.add_argument("--input-mode", choices=INPUT_MODES, default="Pipe", help="for the shard channels")
    p.add_argument("--instance-count", type=int, default=1, help=">1 shards the objects by S3 key across hosts")
    p.add_argument("--shuffle-seed", type=int, help="ShuffleConfig: object order shuffled per epoch (train channel)")
    p.add_argument("--record-wrapper", choices=("None", "RecordIO"), default="None")
    p.add_argument("--compression", choices=("None", "Gzip"), default="None", help="of the S3 objects")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="trainer hyperparameter, e.g. --hp epochs=3 --hp batch-size=64 (repeatable)")


def job_name(args):
    return args.job_name or time.strftime("captcha-%Y-%m-%d-%H-%M-%S", time.gmtime())


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
    """`--hp` pairs -> {name: value} (strings, as SageMaker passes them; a leading -- on a name is dropped)."""
    return {name.lstrip("-"): value for name, value in name_values(pairs, "--hp")}


def read_manifest(dataset):
    """The dataset's manifest, read before anything is launched; it must have train and validation shards."""
    manifest = dataset_manifest.read_manifest(dataset)
    for split in SHARD_CHANNELS:
        if not manifest.split(split).shards:
            raise ManifestError(f"{dataset}: the dataset has no {split} shards")
    return manifest


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
    for split in SHARD_CHANNELS:
        config = {"TrainingInputMode": args.input_mode,
                  # every host validates on all of the validation split (the chief's figures are the job's)
                  "S3DistributionType": distribution(manifest, split, args.instance_count if split == "train" else 1),
                  "RecordWrapperType": args.record_wrapper, "CompressionType": args.compression}
        if args.shuffle_seed is not None and split == "train":
            config["ShuffleConfig"] = {"Seed": args.shuffle_seed}
        channels[split] = (storage.join(args.dataset, split) + ("/" if storage.is_s3(args.dataset) else ""), config)
    channels[META_CHANNEL] = (storage.join(args.dataset, MANIFEST_NAME),
                              {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                               "RecordWrapperType": "None", "CompressionType": "None"})
    return channels
