"""dataset.json: the spec, how the data was made, and per split the exact shards with checksums.

The manifest is written last by the producer, so its presence means the dataset is complete. It may
come from anywhere (an S3 bucket someone else wrote), so `Manifest.from_json`, the one place it is
read, validates it with pydantic against the dataclasses below (strict types: no bool, string or float
where an integer belongs; ranges; no unknown fields), then checks what types cannot say (unique shard
paths inside their split's folder, record counts that add up, a plan version this reader knows). Each
way it can be wrong is one line naming the field.
"""
import dataclasses
import functools
import json
import os
import re
from typing import Annotated, Any, Literal

from pydantic import Field

from tfrecord import content, sagemaker, storage
from tfrecord.errors import ManifestError, SpecError, UserError
from tfrecord.spec import STRICT, CaptchaSpec

MANIFEST_NAME = "dataset.json"
FORMAT_VERSION = 1
PLAN_VERSION = 2  # the producer's label plans; a manifest without one was made by version 1 (materialised plans)
TRAIN, VALIDATION, TEST = SPLITS = ("train", "validation", "test")
MODES = ("uniform", "permutations")
MAX_MANIFEST_BYTES = 16 << 20  # ~70,000 shard entries of ~230 bytes each
MAX_SHARDS = 10000  # per split, what generate makes at most: three splits' entries take under half MAX_MANIFEST_BYTES
MIN_RECORD_BYTES = 16  # TFRecord framing of an empty record: length, its CRC, the data's CRC

Count = Annotated[int, Field(ge=0)]


def shard_name(split, index, num_shards):
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_path(split, index, num_shards):
    """Shard path relative to the dataset root: one folder per split holding only its shards."""
    return f"{split}/{shard_name(split, index, num_shards)}"


@dataclasses.dataclass
class ShardInfo:
    __pydantic_config__ = STRICT
    path: str  # relative to the dataset root: "<split>/<name>.tfrecord"
    records: Count
    bytes: Count
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # hex digest of the shard file


@dataclasses.dataclass
class SplitInfo:
    __pydantic_config__ = STRICT
    examples: Count
    shards: list[ShardInfo]

    def __post_init__(self):
        self.shards = [s if isinstance(s, ShardInfo) else ShardInfo(**s) for s in self.shards]


@dataclasses.dataclass
class Manifest:
    __pydantic_config__ = STRICT
    spec: CaptchaSpec
    seed: Count
    mode: Literal[MODES]
    splits: dict[Literal[SPLITS], SplitInfo]  # split name -> SplitInfo, in SPLITS order
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the producer's label/sharding options
    versions: dict[str, Any] = dataclasses.field(default_factory=dict)  # tool versions that made the data

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
        """dataset.json's text -> Manifest; ManifestError (one line: `source`, the field, what is wrong)."""
        from pydantic import ValidationError

        try:
            d = json.loads(text)
        except ValueError as e:
            raise ManifestError(f"{source}: not a valid dataset manifest ({type(e).__name__}: {e})") from None
        except RecursionError:  # arrays or objects nested deeper than Python's stack
            raise ManifestError(f"{source}: not a valid dataset manifest (JSON nested too deeply)") from None
        if not isinstance(d, dict):
            raise ManifestError(f"{source}: not a valid dataset manifest (a JSON {type(d).__name__}, not an object)")
        if type(d.get("format_version")) is not int or d["format_version"] != FORMAT_VERSION:  # not `true`
            raise ManifestError(f"{source}: unsupported format_version {d.get('format_version')!r}")
        d.pop("format_version")
        try:
            manifest = _schema().validate_json(json.dumps(d))
        except ValidationError as e:
            raise ManifestError(f"{source}: {_first_problem(e)}") from None
        except SpecError as e:  # the spec's own rules (CaptchaSpec.__post_init__)
            raise ManifestError(f"{source}: spec: {e}") from None
        manifest.splits = {name: manifest.splits[name] for name in sorted(manifest.splits, key=SPLITS.index)}
        problem = _inconsistency(manifest)
        if problem:
            raise ManifestError(f"{source}: {problem}")
        return manifest

    def split(self, name):
        if name not in self.splits:
            raise ManifestError(f"dataset has no split {name!r} (has {sorted(self.splits)})")
        return self.splits[name]


@functools.cache
def _schema():
    from pydantic import TypeAdapter

    return TypeAdapter(Manifest)


def _first_problem(error):
    """pydantic's first error as `field.path: what is wrong, got <JSON value>`."""
    problem = error.errors(include_url=False)[0]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"]
                    if part != "[key]").lstrip(".")
    if problem["type"] == "missing":
        return f"{field}: missing"
    if problem["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{field}: unknown field"
    what = re.sub(r"^(Input|String|Value|List|Dictionary|Tuple) should", "must", problem["msg"])
    what = re.sub(r"must be a valid (\w+)", lambda m: f"must be {'an' if m[1][0] in 'aeiou' else 'a'} {m[1]}", what)
    if problem["loc"][-1:] == ("[key]",):
        what = f"split name {what}" if problem["loc"][:1] == ("splits",) else f"key {what}"
    return f"{field or 'the manifest'}: {what}, got {_as_json(problem['input'])}"


def _as_json(value):
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _inconsistency(manifest):
    """What strict types cannot say about a manifest, as one line; None when it holds together."""
    plan_version = manifest.options.get("plan_version", 1)
    if type(plan_version) is not int or not 1 <= plan_version <= PLAN_VERSION:
        return (f"options.plan_version: unknown plan version {_as_json(plan_version)} (this reader knows 1 to "
                f"{PLAN_VERSION}: a newer captcha-pipeline wrote it)")
    seen = set()
    for name, info in manifest.splits.items():
        for i, shard in enumerate(info.shards):
            field = f"splits.{name}.shards[{i}]"
            parts = shard.path.split("/")
            if (parts[0] != name or len(parts) < 2 or not shard.path.endswith(".tfrecord")
                    or any(p in ("", ".", "..") or "\\" in p for p in parts)):
                return (f"{field}.path: {_as_json(shard.path)} is not a shard in the {name!r} split's folder "
                        f"(expected {name}/<name>.tfrecord)")
            if shard.path in seen:
                return f"{field}.path: {shard.path} is listed twice"
            seen.add(shard.path)
            if shard.records * MIN_RECORD_BYTES > shard.bytes:
                return (f"{field}: {shard.records} records cannot fit in {shard.bytes} bytes (each record takes "
                        f"at least {MIN_RECORD_BYTES})")
        total = sum(s.records for s in info.shards)
        if total != info.examples:
            return (f"splits.{name}.examples: {info.examples}, but the record counts of its {len(info.shards)} "
                    f"shards do not add up to it ({total})")
        for option in ("examples", "num_shards"):
            per_split = manifest.options.get(option)
            listed = per_split.get(name) if isinstance(per_split, dict) else None
            actual = info.examples if option == "examples" else len(info.shards)
            if listed is not None and listed != actual:
                return f"options.{option}.{name}: {_as_json(listed)}, but the {name!r} split has {actual}"
    return None


def read_manifest(location):
    """The Manifest of a dataset root or of a dataset.json path (a local file, or an s3:// key ending in .json)."""
    location = str(location)
    is_file = location.endswith(".json") if storage.is_s3(location) else os.path.isfile(location)
    uri = location if is_file else storage.join(location.rstrip("/"), MANIFEST_NAME)
    if not storage.is_s3(uri) and os.path.lexists(uri):  # a FIFO or device there: one line, not a read
        content.check_regular(uri, what="dataset manifest")
    try:
        text = storage.read(uri, limit=MAX_MANIFEST_BYTES)
    except storage.NotFound:
        raise ManifestError(f"{location}: no {MANIFEST_NAME} (not a dataset written by `captcha-pipeline generate`, "
                            f"or an unfinished one)") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{uri}: more than {MAX_MANIFEST_BYTES >> 20} MiB, more than any dataset manifest")
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
                        f"e.g. {os.path.join(split_dir, TRAIN)}")
    return read_manifest(os.path.dirname(os.path.abspath(split_dir)))
