"""Local files we own: written whole or not at all, paths from outside names kept in their folder, exclusive locks.

- `atomic_file` / `write_atomic`: the one way a local file is written. The bytes go to a temp file with a
  unique name beside the target (so the rename stays on one file system), are flushed and fsynced, and the
  temp is renamed over the target; on any failure the temp is removed and the target is as it was. A
  symbolic link at the target is refused (UserError naming it): never written through, never replaced.
- `NoSpace`: a full disk (or quota) while writing is one `UserError` line, `<path>: no space left on device`.
- `inside`: a local path built from a name that came from outside (an S3 key, a manifest entry, a label, a
  job name, a hyperparameter), proved to stay inside its folder and to pass through no symbolic link.
- `exclusive_lock`: an fcntl lock on a lock file for a with-block; a second holder is refused at once.

Needs nothing beyond the standard library (boto3 is never imported here): the trainer uses it in the container.
"""
import contextlib
import errno
import fcntl
import os
import re
import uuid

from tfrecord import storage
from tfrecord.errors import UserError
from tfrecord.streams import BLOCK_SIZE

TMP_SUFFIX = ".tmp"  # a writer's temp files: `.<target name>.<32 hex>.tmp` beside the target
TMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")
LOCK_NAME = ".lock"  # the lock file a command holds in a folder it writes for the whole run
FULL = (errno.ENOSPC, errno.EDQUOT)


class NoSpace(UserError):
    """The disk (or the user's quota) filled up while writing a file; nothing partial is left."""


@contextlib.contextmanager
def disk_errors(path):
    """ENOSPC / EDQUOT inside the block -> NoSpace naming `path`; every other error passes unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno in FULL:
            raise NoSpace(f"{path}: no space left on device") from None
        raise


def temp_path(path):
    """A fresh temp name beside `path`: `.<name>.<uuid4 hex>.tmp` (unique per writer, so two writers
    never share a temp file)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_file(path, mode="wb", replace=True):
    """A file object for writing `path` whole or not at all (see the module doc). With `replace=False` an
    existing `path` is kept and FileExistsError raised (the rename is a hard link, which never replaces).

    Raises UserError for a symbolic link at `path`, NoSpace on a full disk, the OSError otherwise
    (IsADirectoryError for a folder at `path`); the temp file is gone either way.
    """
    path = storage.local_path(path)
    if os.path.islink(path):
        raise UserError(f"{path}: a symbolic link; a file is never written through a link")
    tmp = temp_path(path)
    folder = os.path.dirname(tmp)
    try:
        with disk_errors(path):
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
                os.remove(tmp)
            _fsync_folder(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_atomic(path, data):
    """Write `data` (bytes, or str as UTF-8) to `path` whole or not at all."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def copy_atomic(src, path):
    """Copy the readable binary stream `src` into `path` whole or not at all, a block at a time."""
    with atomic_file(path) as f:
        while block := src.read(BLOCK_SIZE):
            f.write(block)


def _fsync_folder(folder):
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def makedirs(path):
    """os.makedirs(path, exist_ok=True) -> the folders it created, outermost first (for `remove_empty`)."""
    made, current = [], os.path.abspath(path)
    while not os.path.lexists(current):
        made.insert(0, current)
        current = os.path.dirname(current)
    with disk_errors(path):
        os.makedirs(path, exist_ok=True)
    return made


def remove_empty(folders):
    """Remove those of `folders` (from `makedirs`) that are still empty, innermost first: a run that ends
    without writing anything leaves no folders behind."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def inside(folder, name, what):
    """`folder`/`name` for a `name` from outside (with / separators), proved to stay inside `folder`: not
    empty, not absolute, no `.`, `..` or empty parts, no NUL, and no part that exists as a symbolic link.

    Raises UserError naming `what` (where the name came from) and the name, or the link, otherwise.
    """
    name = str(name)
    parts = name.split("/")
    if not name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise UserError(f"{what}: {name!r} is not a path inside {folder}")
    path = os.fspath(folder)
    for part in parts:
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise UserError(f"{path}: a symbolic link inside {folder}; links are not followed")
    return path


def refuse_links(folder, what="output"):
    """Raise UserError naming the first symbolic link found in the tree under `folder` (not following any);
    the folder itself may be a link (the user chose it)."""
    for current, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            path = os.path.join(current, name)
            if os.path.islink(path):
                raise UserError(f"{what} {folder}: {path} is a symbolic link; links inside it are not ours to follow "
                                f"or replace; remove it or choose another location")


@contextlib.contextmanager
def exclusive_lock(path, what):
    """Hold an exclusive lock on the lock file `path` for the with-block (fcntl.flock, released by the
    kernel if the process dies; the file is removed at the end). Raises UserError at once, naming `what`,
    when another process holds it."""
    path = storage.local_path(path)
    while True:
        if not os.path.lexists(path):
            # False: another run made it first; FileNotFoundError: our temp was cleared by a holder
            with contextlib.suppress(FileNotFoundError):
                storage.create(path, f"{os.getpid()}\n".encode())
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # its holder just removed it
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"{path}: a symbolic link where the lock file goes; links are not followed") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{what} is in use by another run (it holds {path}); wait for it to end") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its previous holder had removed: take the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)
