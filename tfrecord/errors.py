"""Errors a user can act on, and the one way every entry point reports them."""
import functools
import os
import re
import sys
import traceback


class UserError(Exception):
    """Bad input or configuration: reported as one line, exit status 2."""


class SpecError(UserError):
    """A CaptchaSpec that cannot be rendered or read."""


class ManifestError(UserError):
    """A dataset.json that is missing, malformed or disagrees with the data."""


class RecordError(UserError):
    """A record that disagrees with the spec it is read with (a wrong alphabet or size in dataset.json, or
    records of another dataset)."""


class CorruptRecordError(UserError):
    """A TFRecord stream whose framing or checksums are wrong."""

    def __init__(self, source, offset, reason):
        super().__init__(f"{source}: corrupt record at byte {offset}: {reason}")
        self.source, self.offset, self.reason = source, offset, reason


class NotTFRecordError(CorruptRecordError):
    """Bytes of a recognisable other kind (gzip, RecordIO, an image, ...) where a TFRecord was expected."""

    def __init__(self, source, offset, what, advice):
        UserError.__init__(self, f"{source}: {what} at byte {offset}, not TFRecord: {advice}")
        self.source, self.offset, self.reason = source, offset, what


def _user_errors():
    pending, names = [UserError], []
    while pending:
        cls = pending.pop()
        names.append(cls.__name__)
        pending += cls.__subclasses__()
    return names


def embedded_user_error(exc):
    """The message of a UserError raised inside a tf.data generator, which reaches the caller only as
    the text of a TensorFlow error; None if there is none."""
    pattern = re.compile(rf"^(?:\w+\.)*(?:{'|'.join(_user_errors())}): (.+)$", re.MULTILINE)
    found = pattern.findall(str(exc))
    return found[-1] if found else None


def exits_on_user_error(main):
    """Wrap an entry point `main(argv) -> int` so a UserError prints one line and exits 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as e:
            message = str(e)
        except Exception as e:  # a TensorFlow error carrying one of ours from a tf.data generator
            message = embedded_user_error(e)
            if message is None:
                raise
        print(f"error: {message}", file=sys.stderr)
        return 2

    return wrapper


def run_as_process(main, argv=None):
    """Run an entry point as the whole process (a console command, `python -m`): -> its exit status 0.

    A process that has printed an error exits at once: an exception escaping `main` is printed as Python
    prints it, then the process exits 1; a non-zero status exits as it is. A normal interpreter shutdown
    would destroy tf.data iterators still alive (held by the traceback's frames) after TensorFlow's
    threads can no longer take the GIL, and wait for those threads for good."""
    try:
        status = main(argv)
    except Exception:
        traceback.print_exc()
        status = 1
    if status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
