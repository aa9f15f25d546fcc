"""What `generate` may do at its output: hold it, check what is there, write its files, remove only its own.

The run holds the output for its whole length (`storage.lock`: an fcntl lock locally, a conditional PUT
on S3), so a second run into the same place is refused in one line, and the output is checked under
the lock. A dataset there is ours (its manifest names its shards), as are shards without a manifest
(an interrupted run: names only the producer gives, see `in_layout`) and temp files of a writer that
died; anything else is not, and is refused, never deleted. A symbolic link inside a local output is
not ours either: it is refused, and no write, rename or delete goes through one.
"""
import os
import re

from tfrecord import localfs, storage
from tfrecord.errors import UserError
from tfrecord.manifest import MANIFEST_NAME, SPLITS, read_manifest, shard_path


def _layout_pattern():
    """shard_path's names as a regex, derived from shard_path itself: `<split>/<split>-NNNNN-of-NNNNN.tfrecord`
    for a known split, each number as wide as the format pads it, or wider."""
    sample = re.escape(shard_path("SPLIT", 1, 2))  # SPLIT/SPLIT-00001-of-00002\.tfrecord
    pattern = re.sub(r"0*[12]", lambda number: rf"\d{{{len(number.group())},}}", sample)
    return re.compile(pattern.replace("SPLIT", f"(?P<split>{'|'.join(SPLITS)})", 1).replace("SPLIT", "(?P=split)"))


LAYOUT = _layout_pattern()


def in_layout(relpath):
    """Whether `relpath` (with / separators) is a shard name the producer writes."""
    return LAYOUT.fullmatch(relpath) is not None


def is_temp(relpath):
    """Whether `relpath` is a temp file our atomic writer leaves when its process dies mid-write."""
    return localfs.TMP_NAME.fullmatch(relpath.rsplit("/", 1)[-1]) is not None


def hold(output):
    """Context manager: `output` held for this run (see the module doc); UserError if another run holds it."""
    return storage.lock(output, f"output {output}")


def shard_uri(output, relpath):
    """Where a shard goes: locally proved to stay inside `output` through no symbolic link."""
    if storage.is_s3(output):
        return storage.join(output, relpath)
    return localfs.inside(output, relpath, f"output {output}")


def prepare(output, manifest, overwrite):
    """Under `hold`: refuse to clobber a different dataset, local or on S3 alike; with --overwrite remove
    the old one (manifest first, then its shards and temp files) and nothing else. A file that is not part
    of a dataset is refused, never deleted: inside a split folder a folder reader would mix it into the data."""
    if not storage.is_s3(output) and os.path.isdir(output):
        localfs.refuse_links(output)
    files = [storage.relative(output, uri) for uri, _ in storage.list(storage.join(output, ""))]
    files = [f for f in files if f != localfs.LOCK_NAME]
    if not files:
        return
    old = read_manifest(output) if MANIFEST_NAME in files else None
    if old:
        ours = {MANIFEST_NAME} | {s.path for info in old.splits.values() for s in info.shards}
    else:  # shards of an interrupted run, known by the names only the producer gives
        ours = {f for f in files if in_layout(f)}
    temps = [f for f in files if is_temp(f)]
    foreign = sorted(f for f in files if f not in ours and f not in temps)
    if foreign:
        raise UserError(f"output {output} holds {storage.join(output, foreign[0])}, which is not part of "
                        f"{'the dataset in ' + MANIFEST_NAME if old else 'a dataset'}; move it away or choose another location")
    remove_temps(output, temps)  # a dead writer's; no other run holds the output
    if old:
        if _identity(old) == _identity(manifest):
            return  # the same dataset: re-running rewrites identical bytes
        if not overwrite:
            raise UserError(f"output {output} already holds a different dataset; pass --overwrite to replace it")
    elif not ours:
        return  # only temp files, now gone
    elif not overwrite:
        raise UserError(f"output {output} holds shards but no {MANIFEST_NAME} (an interrupted run?); pass --overwrite to replace them")
    storage.delete([storage.join(output, MANIFEST_NAME)] if old else [])
    storage.delete(storage.join(output, f) for f in files if f in ours and f != MANIFEST_NAME)  # listed: inside


def remove_temps(output, relpaths=None):
    """Under `hold`: delete the temp files at `output` (`relpaths`, or every one listed there), e.g. the
    chunk parts of a run that failed; no other run holds the output, so every temp file there is ours."""
    if relpaths is None:
        relpaths = [f for f in (storage.relative(output, uri) for uri, _ in storage.list(storage.join(output, ""))) if is_temp(f)]
    storage.delete(storage.join(output, f) for f in relpaths)


def _identity(manifest):
    return manifest.spec, manifest.seed, manifest.mode, manifest.options
