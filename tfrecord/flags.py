"""Command-line flags checked before any work: one parser class and the checks every command's flags use.

Every command builds its parser with `ArgumentParser` and gives each flag the `type=` that says what it
must be (`positive_int`, `creatable_folder`, `writable_file`, ...). argparse runs those checks while it
parses, on the defaults too, so a flag of the wrong kind is refused before the command does anything;
checks that look at several flags at once (`distinct`) run right after parsing. Any refusal, argparse's
own included ("the following arguments are required"), is a UserError: one line `error: --flag: why`
and exit status 2 (tfrecord.errors.exits_on_user_error), never argparse's usage block.

The path checks read the file system and write nothing: a folder that does not exist yet passes when it
could be created, and the command creates it later. "" is never a path. A string with a scheme (`xx:/`,
`xx://`) is refused unless it is a valid `s3://bucket[/prefix]` (storage.is_s3), and that passes unchanged
for the command to check its bucket with the S3 client; `local_folder` and `local_file` refuse s3:// too,
for outputs a command writes on local disk only. An output is never written through a symbolic link: a
link as an output file is refused, as is a dangling link as an output folder (a link to an existing folder
is the folder the user chose). `distinct` refuses two outputs on one path, one inside another, and an
output inside an input dataset. Imports the standard library only (the training container has it).
"""
import argparse
import math
import os
import re
import stat

from tfrecord import storage
from tfrecord.content import file_kind, not_regular
from tfrecord.errors import UserError

NAME_MAX = 255  # bytes in one file name on Linux's file systems (ext4, xfs, tmpfs) and macOS's APFS


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors raise UserError (one line, exit 2) instead of printing usage."""

    def error(self, message):
        raise UserError(one_line(message))


def one_line(message):
    """argparse's `argument --a/--b: why` -> `--b: why` (the long name); other messages as they are."""
    found = re.fullmatch(r"argument ([^:]+): (.*)", message, re.DOTALL)
    if found:
        names = found.group(1).split("/")
        name = next((n for n in names if n.startswith("--")), names[0])
        message = f"{name}: {found.group(2)}"
    return " ".join(message.split()) + ("" if found else " (see --help)")


# --- numbers --------------------------------------------------------------------------------------------

def _number(kind, text):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
    return value


def at_least(low, kind=int, *, most=None, why=""):
    """A `type=` for numbers >= low: `at_least(1)` for counts and sizes, `at_least(0.0, float)`; with `most`,
    also <= most (`why` says where that bound comes from, e.g. " (this host's CPU cores)")."""

    def check(text):
        value = _number(kind, text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g} (got {text})")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}{why} (got {text})")
        return value

    check.__name__ = f"at_least_{low}"
    return check


positive_int = at_least(1)
non_negative_int = at_least(0)
non_negative_float = at_least(0.0, float)
seed = at_least(0, most=2**32 - 1, why=" (a 32-bit seed, as NumPy takes)")
MAX_PICTURES = 1000  # images on one contact sheet or gallery: beyond this it is a dataset, not a picture
pictures = at_least(1, most=MAX_PICTURES, why=" (images on one sheet)")


def positive_float(text):
    """A `type=` for numbers > 0 (rates, scales, seconds)."""
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive (got {text})")
    return value


MAX_SECONDS = 7 * 24 * 3600  # a wait longer than a week is a typo (and past threading.TIMEOUT_MAX, an OverflowError)


def seconds(text):
    """A `type=` for a duration in seconds: positive, at most MAX_SECONDS."""
    value = positive_float(text)
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SECONDS} seconds, a week (got {text})")
    return value


def fraction(text):
    """A `type=` for a share in (0, 1]."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (got {text})")
    return value


def port(text):
    """A `type=` for a TCP port number, 1-65535."""
    value = _number(int, text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535) (got {text})")
    return value


# --- paths ------------------------------------------------------------------------------------------------

def _is_s3(path):
    """Whether `path` is a valid s3:// location. Refuses "" and every other URI (`S3://b`, `s3://`, `s3:/b`,
    `file:///x`); storage.is_s3 is the one place locations are parsed."""
    if not path:
        raise argparse.ArgumentTypeError("an empty string is not a path")
    try:
        return storage.is_s3(path)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _no_link(path, what):
    """Refuse a symbolic link at `path` where the command writes `what` (a dangling one included)."""
    if os.path.islink(path):
        target = os.readlink(path)
        state = "" if os.path.exists(path) else ", dangling"
        raise argparse.ArgumentTypeError(f"{path}: a symbolic link (to {target}{state}); {what} is never written "
                                         "through a link")


def _stat(path):
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file on the way
        return None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: {e.strerror}") from None


def _must_be(path, test, what):
    """Refuse `path` unless it exists and its mode passes `test`; `what` is e.g. "a folder"."""
    found = _stat(path)
    if found is None:
        raise argparse.ArgumentTypeError(f"{path}: no such {what.split()[-1]}")
    if not test(found.st_mode):
        raise argparse.ArgumentTypeError(f"{path}: is {file_kind(found.st_mode)}, not {what}")


def regular_file(path):
    """A `type=` for a file to read: it exists and is a regular file (not a folder, FIFO or device, whose
    reads could block or never end). s3:// passes."""
    if not _is_s3(path):
        found = _stat(path)
        if found is None:
            raise argparse.ArgumentTypeError(f"{path}: no such file")
        if not_regular(found.st_mode):
            raise argparse.ArgumentTypeError(f"{path}: {not_regular(found.st_mode)}")
        if not os.access(path, os.R_OK):
            raise argparse.ArgumentTypeError(f"{path}: not readable")
    return path


def existing_folder(path):
    """A `type=` for a folder to read: it exists and is a folder. s3:// passes."""
    if not _is_s3(path):
        _must_be(path, stat.S_ISDIR, "a folder")
    return path


def file_or_folder(path):
    """A `type=` for a path read as a file or as a folder of files: a regular file or a folder. s3:// passes."""
    if _is_s3(path):
        return path
    found = _stat(path)
    if found is not None and stat.S_ISDIR(found.st_mode):
        return path
    return regular_file(path)


def _not_creatable(folder):
    """Why `folder` can be neither used nor created as a folder ("X is a file", "no write permission in
    X"), else None."""
    here = os.path.abspath(folder)
    while (found := _stat(here)) is None:
        here = os.path.dirname(here)
    if not stat.S_ISDIR(found.st_mode):
        return f"{here} is {file_kind(found.st_mode)}"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"no write permission in {here}"
    return None


def creatable_folder(path):
    """A `type=` for a folder to write into: a writable folder, or one that can be created (every part
    of the path that exists is a folder, and the deepest of them is writable). Creates nothing. s3:// passes."""
    if _is_s3(path):
        return path
    if not os.path.exists(path):
        _no_link(path, "an output folder")
    found = _stat(path)
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise argparse.ArgumentTypeError(f"{path}: is {file_kind(found.st_mode)}, not a folder")
    problem = _not_creatable(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{path}: cannot be a folder ({problem})")
    return path


def empty_folder(path):
    """A `type=` for a local folder the command fills and owns: an empty folder, or one that can be created."""
    local_folder(path)
    if os.path.isdir(path) and os.listdir(path):
        raise argparse.ArgumentTypeError(f"{path}: not empty")
    return path


def writable_file(path):
    """A `type=` for a file to write: not a folder or special file, writable if it exists, and its folder
    writable or creatable. Creates nothing. s3:// passes."""
    if _is_s3(path):
        return path
    _no_link(path, "an output file")
    found = _stat(path)
    if found is not None:
        if not stat.S_ISREG(found.st_mode):
            raise argparse.ArgumentTypeError(f"{path}: is {file_kind(found.st_mode)}, not a file")
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{path}: not writable")
    name = os.path.basename(os.path.abspath(path))
    if len(name.encode()) > NAME_MAX:
        raise argparse.ArgumentTypeError(f"{path}: file name longer than {NAME_MAX} bytes")
    problem = _not_creatable(os.path.dirname(os.path.abspath(path)))
    if problem:
        raise argparse.ArgumentTypeError(f"{path}: cannot be written ({problem})")
    return path


def _local(check):
    def local(path):
        if _is_s3(path):
            raise argparse.ArgumentTypeError(f"{path}: a local path is needed here, not s3://")
        return check(path)

    local.__name__ = f"local_{check.__name__}"
    local.__doc__ = f"`{check.__name__}`, refusing s3:// too (an output written on local disk only)."
    return local


local_folder = _local(creatable_folder)
local_file = _local(writable_file)


def s3_uri(text):
    """A `type=` for an s3://bucket/prefix URI."""
    if not re.fullmatch(r"s3://[^/]+(/.*)?", text):
        raise argparse.ArgumentTypeError(f"{text}: not an s3://bucket/prefix URI")
    return text


def http_url(text):
    """A `type=` for an http:// or https:// base URL."""
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", text):
        raise argparse.ArgumentTypeError(f"{text}: not an http:// or https:// URL")
    return text


def _where(path):
    """A comparable form of a location: the real path of a local one, an s3:// URI without trailing slashes."""
    return path.rstrip("/") if storage.is_s3(path) else os.path.realpath(path)


def _within(path, folder):
    """Whether `path` is `folder` or inside it (both from `_where`)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + ("/" if storage.is_s3(folder) else os.sep))


def _input_roots(path):
    """What an input location protects: itself (a file's folder, for a dataset.json), and the dataset root
    above a split folder (the folder holding dataset.json)."""
    where = _where(path)
    if storage.is_s3(path):
        return [where]
    if os.path.isfile(where):
        where = os.path.dirname(where)
    parent = os.path.dirname(where)
    return [where, parent] if os.path.isfile(os.path.join(parent, "dataset.json")) else [where]


def distinct(args, *flags, owned=None, inputs=()):
    """Refuse, in one line, outputs that could overwrite each other or the data the command reads: two of
    `flags` (attribute names of `args`: outputs) naming the same location, any of them inside the folder of
    an `owned` flag (a folder the command fills itself; a name or a tuple of names), and any of them equal
    to or inside an input of `inputs` (attribute names of input files or folders; a split folder protects
    its whole dataset). Unset flags are skipped."""
    owned = (owned,) if isinstance(owned, str) else tuple(owned or ())
    paths = {flag: getattr(args, flag) for flag in flags if getattr(args, flag)}
    real = {flag: _where(path) for flag, path in paths.items()}
    names = list(real)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if real[a] == real[b]:
                raise UserError(f"{flag_name(a)} and {flag_name(b)} are the same path ({paths[a]})")
    for flag in names:
        for folder in owned:
            if folder in real and flag != folder and _within(real[flag], real[folder]):
                raise UserError(f"{flag_name(flag)} {paths[flag]} is inside {flag_name(folder)} {paths[folder]}, "
                                "which this command fills")
    for source in inputs:
        if getattr(args, source):
            for root in _input_roots(getattr(args, source)):
                for flag in names:
                    if _within(real[flag], root):
                        raise UserError(f"{flag_name(flag)} {paths[flag]} is inside the dataset read ({root}); "
                                        "outputs go outside the data read")


def flag_name(attribute):
    """`batch_size` -> `--batch-size`."""
    return "--" + attribute.replace("_", "-")


def file_name_fits(folder, name, flag):
    """Refuse, before writing any, a file name longer than the file system takes in `folder` (or, while
    it does not exist, in the folder it will be created in)."""
    here = os.path.abspath(folder)
    while not os.path.isdir(here):
        here = os.path.dirname(here)
    try:
        limit = os.pathconf(here, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    if len(name.encode()) > limit:
        raise UserError(f"{flag} {folder}: file names here would reach {len(name.encode())} bytes "
                        f"(e.g. {name[:40]}...), over the file system's {limit}")
