"""Errors a user can act on, and the one way every entry point reports them."""
import functools
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


def exits_on_user_error(main):
    """Wrap an entry point `main(argv) -> int` so a UserError prints one line and exits 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper
