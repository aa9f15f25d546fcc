"""The files reader: sharded TFRecord files in a folder (local, or SageMaker File and FastFile mode).

Shards are read in Python in large blocks with both CRCs verified (tfrecord/framing.py), so a corrupt
shard is one line naming the shard and byte offset. Where the manifest is at hand, exactly its shards
are read and each shard's record count is checked against it as the shard ends.
"""
import collections
import itertools
import os

from tfrecord import batching, content
from tfrecord.errors import ManifestError, UserError
from tfrecord.framing import RecordSplitter
from tfrecord.manifest import MANIFEST_NAME, TRAIN, Manifest
from tfrecord.spec import CaptchaSpec
from tfrecord.streams import BLOCK_SIZE

CYCLE = 16  # shards read round-robin, a block at a time, when shuffling


def shard_files(source):
    """A split directory (recursively, *.tfrecord), one shard path, or a list of shard paths -> sorted list."""
    if isinstance(source, (list, tuple)):
        return list(source)
    source = os.fspath(source)
    if not os.path.isdir(source):
        if not os.path.exists(source):
            raise UserError(f"{source}: no such shard or split directory")
        return [source]
    if os.path.exists(os.path.join(source, MANIFEST_NAME)):
        raise UserError(f"{source} is a dataset root: pass one split directory, e.g. {os.path.join(source, TRAIN)}")
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(source) for f in names if f.endswith(".tfrecord"))
    if not files:
        raise UserError(f"{source}: no .tfrecord shards")
    return files


def manifest_shards(directory, manifest, split, *, subset=False):
    """[(path, records)]: the manifest's shards of `split` found in `directory`, which must hold no others.

    subset=True (ShardedByS3Key: this host holds some of the shards) accepts missing shards.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise UserError(f"{directory}: not a split directory")
    listed = {_in_split(s.path, split): s.records for s in manifest.split(split).shards}
    found = {os.path.relpath(p, directory).replace(os.sep, "/"): p for p in shard_files(directory)}
    strangers = sorted(set(found) - set(listed))
    if strangers:
        more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
        raise ManifestError(f"{found[strangers[0]]}{more}: not one of the {len(listed)} shards of the {split!r} split "
                            f"in {MANIFEST_NAME}")
    missing = sorted(set(listed) - set(found))
    if missing and not subset:
        raise ManifestError(f"{os.path.join(directory, missing[0])}: missing ({MANIFEST_NAME} lists it in the "
                            f"{split!r} split, {len(missing)} of {len(listed)} shards missing)")
    return [(found[name], listed[name]) for name in sorted(found)]


def _in_split(path, split):
    """A manifest shard path (relative to the dataset root) relative to its split folder."""
    return path[len(split) + 1:] if path.startswith(f"{split}/") else path


def read_shard(path, records=None):
    """Yield blocks of verified records from one shard; with `records`, its count must match exactly."""
    splitter, count = RecordSplitter(path), 0
    with content.open_regular(path) as f:
        while chunk := f.read(BLOCK_SIZE):
            block = splitter.feed(chunk)
            count += len(block)
            if records is not None and count > records:
                raise ManifestError(f"{path}: more than the {records} records {MANIFEST_NAME} lists for it")
            if block:
                yield block
    splitter.finish()
    if records is not None and count != records:
        raise ManifestError(f"{path}: {count} records, {MANIFEST_NAME} lists {records} (a short shard)")


def interleave(streams, cycle):
    """Blocks from up to `cycle` streams at a time, round-robin; the next stream joins as one ends."""
    streams = iter(streams)
    active = collections.deque(itertools.islice(streams, cycle))
    while active:
        stream = active.popleft()
        block = next(stream, None)
        if block is None:
            active.extend(itertools.islice(streams, 1))
        else:
            yield block
            active.append(stream)


def files_dataset(source: str | os.PathLike | list, spec: CaptchaSpec, batch_size: int, *,
                  manifest: Manifest | None = None, split: str | None = None, subset: bool = False,
                  num_workers: int = 1, worker_index: int = 0, shuffle_buffer: int = 0, seed: int | None = None,
                  repeat: bool = False, deterministic: bool = False, lengths: bool = False) -> "tf.data.Dataset":
    """Shards -> tf.data of (uint8 images [B, H, W, C], int32 labels [B, length]); [H, W, C] = spec.input_shape.

    Args:
      source: with `manifest`, the folder of `split`; without, a split folder (every *.tfrecord under it),
        one shard, or a list of shard paths.
      spec: the CaptchaSpec the records are checked against (the first CHECKED records of each shard) and
        decoded with.
      batch_size: examples per batch; the last batch of a pass may be shorter.
      manifest, split: read exactly the manifest's shards of `split` (see manifest_shards), each one's record
        count checked as it ends.
      subset: the folder may hold only some of the split's shards (ShardedByS3Key).
      num_workers, worker_index, shuffle_buffer, seed, repeat, deterministic, lengths: see batching.ReadOptions;
        here num_workers > 1 keeps every num_workers-th shard.
    Raises:
      UserError (at once): no shards, a shard that is not a regular file, shards the manifest does not list
        or lacks, fewer shards than workers. While reading (as the error of the iteration): a corrupt
        record or other content (CorruptRecordError), a record that disagrees with the spec (RecordError),
        a wrong record count (ManifestError).
    """
    options = batching.ReadOptions(num_workers, worker_index, shuffle_buffer, seed, repeat, deterministic, lengths)
    if manifest is not None:
        shards = manifest_shards(source, manifest, split, subset=subset)
    else:
        shards = [(path, None) for path in shard_files(source)]
    for path, _ in shards:  # before any work: a FIFO or device in a shard's place would block or never end
        content.check_regular(path)
    if num_workers > 1:
        shards = shards[worker_index::num_workers]
        if not shards:
            raise UserError(f"{source}: fewer shards than workers; worker {worker_index} of {num_workers} gets none")

    def blocks(rng):
        for _ in itertools.count() if repeat else range(1):
            if shuffle_buffer:
                order = rng.sample(shards, len(shards))
                yield from interleave((batching.checked(read_shard(*shard), spec, shard[0]) for shard in order), CYCLE)
            else:
                for shard in shards:
                    yield from batching.checked(read_shard(*shard), spec, shard[0])

    return batching.dataset(blocks, spec, batch_size, options)
