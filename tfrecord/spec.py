"""CaptchaSpec: what one captcha looks like. Validated on creation, serialised into dataset.json."""
import dataclasses
import string

from tfrecord.errors import SpecError

ALPHABETS = {"digits": string.digits, "lower": string.ascii_lowercase, "upper": string.ascii_uppercase}
MODES = {"L": 1, "RGB": 3}  # PIL mode -> channels
IMAGE_FORMATS = ("png",)
MIN_CHAR_WIDTH = 10  # pixels per character below which captchas are unreadable
MIN_HEIGHT = 20


def default_width(length):
    """The seed's rule: 40 px of margin plus 20 px per character (120 px for 4 characters)."""
    return 40 + 20 * length


@dataclasses.dataclass(frozen=True)
class CaptchaSpec:
    alphabet: str = string.digits
    length: int = 4
    width: int = 0  # 0: default_width(length)
    height: int = 100
    mode: str = "L"
    image_format: str = "png"
    fonts: tuple = ()  # empty: the fonts bundled with `captcha`

    def __post_init__(self):
        if not self.alphabet:
            raise SpecError("alphabet is empty: pass at least one of -d/-l/-u/--chars")
        if len(set(self.alphabet)) != len(self.alphabet):
            raise SpecError(f"alphabet {self.alphabet!r} repeats a character")
        if any(c.isspace() for c in self.alphabet):
            raise SpecError("alphabet must not contain whitespace")
        if not isinstance(self.length, int) or self.length < 1:
            raise SpecError(f"length must be >= 1, got {self.length}")
        if not self.width:
            object.__setattr__(self, "width", default_width(self.length))
        object.__setattr__(self, "fonts", tuple(self.fonts))
        if self.width < MIN_CHAR_WIDTH * self.length or self.height < MIN_HEIGHT:
            raise SpecError(
                f"image {self.width}x{self.height} is too small for {self.length} characters "
                f"(need width >= {MIN_CHAR_WIDTH * self.length} and height >= {MIN_HEIGHT})")
        if self.mode not in MODES:
            raise SpecError(f"mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise SpecError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")

    @property
    def num_classes(self):
        return len(self.alphabet)

    @property
    def channels(self):
        return MODES[self.mode]

    def encode_label(self, text):
        """Label string -> list of alphabet indices; rejects wrong length or foreign characters."""
        if len(text) != self.length or any(c not in self.alphabet for c in text):
            raise SpecError(f"label {text!r} is not {self.length} characters of {self.alphabet!r}")
        return [self.alphabet.index(c) for c in text]

    def decode_label(self, indices):
        return "".join(self.alphabet[i] for i in indices)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["fonts"] = list(self.fonts)
        return d

    @classmethod
    def from_dict(cls, d):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise SpecError(f"unknown spec fields: {sorted(unknown)}")
        return cls(**d)

    def describe(self):
        return f"{self.length} of {self.alphabet!r}, {self.width}x{self.height} {self.mode} {self.image_format}"
