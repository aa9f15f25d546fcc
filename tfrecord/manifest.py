"""dataset.json: the spec, how the data was made, and per split the exact shards with checksums.

The manifest is written last by the producer, so its presence means the dataset is complete.
"""
import dataclasses
import json
import os

from tfrecord import sagemaker, storage
from tfrecord.errors import ManifestError, SpecError, UserError
from tfrecord.spec import CaptchaSpec

MANIFEST_NAME = "dataset.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")


def shard_name(split, index, num_shards):
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_path(split, index, num_shards):
    """Shard path relative to the dataset root: one folder per split holding only its shards."""
    return f"{split}/{shard_name(split, index, num_shards)}"


@dataclasses.dataclass
class ShardInfo:
    path: str  # relative to the dataset root
    records: int
    bytes: int
    sha256: str


@dataclasses.dataclass
class SplitInfo:
    examples: int
    shards: list

    def __post_init__(self):
        self.shards = [s if isinstance(s, ShardInfo) else ShardInfo(**s) for s in self.shards]


@dataclasses.dataclass
class Manifest:
    spec: CaptchaSpec
    seed: int
    mode: str  # "uniform" or "permutations"
    splits: dict  # split name -> SplitInfo
    options: dict = dataclasses.field(default_factory=dict)  # the producer's label/sharding options
    versions: dict = dataclasses.field(default_factory=dict)  # tool versions that made the data

    def to_json(self):
        d = {
            "format_version": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "seed": self.seed,
            "mode": self.mode,
            "options": self.options,
            "versions": self.versions,
            "splits": {name: dataclasses.asdict(info) for name, info in self.splits.items()},
        }
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text, source=MANIFEST_NAME):
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise ManifestError(f"{source}: not a valid dataset manifest (a JSON {type(d).__name__}, not an object)")
            if d.get("format_version") != FORMAT_VERSION:
                raise ManifestError(f"{source}: unsupported format_version {d.get('format_version')!r}")
            manifest = cls(
                spec=CaptchaSpec.from_dict(d["spec"]), seed=d["seed"], mode=d["mode"],
                splits={name: SplitInfo(**d["splits"][name]) for name in sorted(d["splits"], key=_split_order)},
                options=d.get("options", {}), versions=d.get("versions", {}))
        except (ValueError, KeyError, TypeError, SpecError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"{source}: not a valid dataset manifest ({type(e).__name__}: {e})") from e
        for name, info in manifest.splits.items():
            if sum(s.records for s in info.shards) != info.examples:
                raise ManifestError(f"{source}: split {name!r} shard record counts do not add up to {info.examples}")
        return manifest

    def split(self, name):
        if name not in self.splits:
            raise ManifestError(f"dataset has no split {name!r} (has {sorted(self.splits)})")
        return self.splits[name]


def _split_order(name):
    return (SPLITS.index(name) if name in SPLITS else len(SPLITS), name)


def read_manifest(location):
    """The Manifest of a dataset root or of a dataset.json path (a local file, or an s3:// key ending in .json)."""
    location = str(location)
    is_file = location.endswith(".json") if storage.is_s3(location) else os.path.isfile(location)
    uri = location if is_file else storage.join(location.rstrip("/"), MANIFEST_NAME)
    try:
        text = storage.read(uri)
    except storage.NotFound:
        raise ManifestError(f"{location}: no {MANIFEST_NAME} (not a dataset written by `captcha-pipeline generate`, "
                            f"or an unfinished one)") from None
    try:
        text = text.decode()
    except UnicodeDecodeError:
        raise ManifestError(f"{uri}: not a valid dataset manifest (not UTF-8 text)") from None
    return Manifest.from_json(text, source=uri)


def locate_manifest(flag, split_dir, split_flag):
    """The trainer side's manifest: `flag` (a dataset.json or dataset root), else the SageMaker `meta`
    channel, else the dataset.json beside the split dir given with `split_flag`."""
    if flag:
        return read_manifest(flag)
    meta = sagemaker.channel_dir("meta")
    if os.path.isfile(os.path.join(meta, MANIFEST_NAME)):
        return read_manifest(meta)
    if not os.path.isdir(split_dir):
        raise UserError(f"{split_flag} {split_dir}: no such folder (and no {MANIFEST_NAME} in a `meta` channel)")
    if os.path.isfile(os.path.join(split_dir, MANIFEST_NAME)):
        raise UserError(f"{split_flag} {split_dir}: a dataset root, not a split folder; pass one split, "
                        f"e.g. {os.path.join(split_dir, 'train')}")
    return read_manifest(os.path.dirname(os.path.abspath(split_dir)))
