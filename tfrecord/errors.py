"""Errors a user can act on, and the one way every entry point reports them."""
import functools
import re
import sys


class UserError(Exception):
    """Bad input or configuration: reported as one line, exit status 2."""


class SpecError(UserError):
    """A CaptchaSpec that cannot be rendered or read."""


class ManifestError(UserError):
    """A dataset.json that is missing, malformed or disagrees with the data."""


class CorruptRecordError(UserError):
    """A TFRecord stream whose framing or checksums are wrong."""

    def __init__(self, source, offset, reason):
        super().__init__(f"{source}: corrupt record at byte {offset}: {reason}")
        self.source, self.offset, self.reason = source, offset, reason


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
