"""CaptchaSpec: what one captcha looks like and how it is stored. Validated on creation, serialised into dataset.json.

`length` is the longest label; `min_length` the shortest (0, or absent from an older dataset.json: `length`,
a fixed length). A variable-length label is stored at its own length; readers pad it to `length` with
`spec.pad` (the index one past the alphabet) and also give each label's length.
`width`/`height` are the RENDER size (what `captcha` draws); `store_width`/`store_height` the STORED
size (a box-filter downscale of the render by whole factors; 0 = the render size). Readers yield and
the model takes `input_shape` = (stored height, stored width, channels), as uint8.
"""
import dataclasses
import itertools
import string

from tfrecord.errors import SpecError

ALPHABETS = {"digits": string.digits, "lower": string.ascii_lowercase, "upper": string.ascii_uppercase}
MODES = {"L": 1, "RGB": 3}  # PIL mode -> channels
IMAGE_FORMATS = ("png", "raw")  # raw: uint8 pixels, H*W*C row-major
MIN_CHAR_WIDTH = 10  # pixels per character below which captchas are unreadable
MIN_HEIGHT = 20
# pydantic's config for every dataclass dataset.json holds (tfrecord/manifest.py validates it): no bool, string or
# float where an integer belongs, no unknown fields
STRICT = {"strict": True, "extra": "forbid"}
MAX_SIDE = 1024  # pixels: captchas are small, and a spec from outside must not size a model without bound
SPEC_FILE = "captcha_spec.json"  # a spec saved as JSON beside a model (export) or a training state (checkpoint)


def default_width(length):
    """The seed's rule: 40 px of margin plus 20 px per character (120 px for 4 characters)."""
    return 40 + 20 * length


@dataclasses.dataclass(frozen=True)
class CaptchaSpec:
    __pydantic_config__ = STRICT
    alphabet: str = string.digits
    length: int = 4  # the longest label
    width: int = 0  # 0: default_width(length)
    height: int = 100
    mode: str = "L"
    image_format: str = "png"
    fonts: tuple[str, ...] = ()  # empty: the fonts bundled with `captcha`
    store_width: int = 0  # 0: width
    store_height: int = 0  # 0: height
    min_length: int = 0  # the shortest label; 0: length (fixed length)

    def __post_init__(self):
        if not self.alphabet:
            raise SpecError("alphabet is empty: pass at least one of -d/-l/-u/--chars")
        if len(set(self.alphabet)) != len(self.alphabet):
            raise SpecError(f"alphabet {self.alphabet!r} repeats a character")
        if any(c.isspace() for c in self.alphabet):
            raise SpecError("alphabet must not contain whitespace")
        if not isinstance(self.length, int) or self.length < 1:
            raise SpecError(f"length must be >= 1, got {self.length}")
        if not self.min_length:
            object.__setattr__(self, "min_length", self.length)
        if not isinstance(self.min_length, int) or not 1 <= self.min_length <= self.length:
            raise SpecError(f"min_length must be between 1 and length {self.length}, got {self.min_length}")
        if not self.width:
            object.__setattr__(self, "width", default_width(self.length))
        object.__setattr__(self, "store_width", self.store_width or self.width)
        object.__setattr__(self, "store_height", self.store_height or self.height)
        object.__setattr__(self, "fonts", tuple(self.fonts))
        for what, (w, h) in (("image", self.render_size), ("stored image", self.store_size)):
            if w < MIN_CHAR_WIDTH * self.length or h < MIN_HEIGHT:
                raise SpecError(
                    f"{what} {w}x{h} is too small for {self.length} characters "
                    f"(need width >= {MIN_CHAR_WIDTH * self.length} and height >= {MIN_HEIGHT})")
            if w > MAX_SIDE or h > MAX_SIDE:
                raise SpecError(f"{what} {w}x{h} is larger than {MAX_SIDE}x{MAX_SIDE} pixels")
        if self.width % self.store_width or self.height % self.store_height:
            raise SpecError(f"stored size {self.store_width}x{self.store_height} must divide the render size "
                            f"{self.width}x{self.height} (e.g. {self.width // 2}x{self.height // 2}): only at whole "
                            "factors do PIL's BOX filter and TensorFlow's area resize give the same pixels")
        if self.mode not in MODES:
            raise SpecError(f"mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise SpecError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")

    @property
    def num_classes(self):
        return len(self.alphabet)

    @property
    def lengths(self):
        """The label lengths this spec allows, shortest first."""
        return range(self.min_length, self.length + 1)

    @property
    def variable(self):
        """True when labels may be shorter than `length`."""
        return self.min_length < self.length

    @property
    def pad(self):
        """The label index past a label's own length in the readers' padded labels: one past the alphabet
        (`num_classes`), which the per-position head reads as "end" and the CTC head as its blank."""
        return self.num_classes

    @property
    def length_text(self):
        """`4`, or `3-5` for a variable length (as `generate --length` takes it)."""
        return f"{self.min_length}-{self.length}" if self.variable else str(self.length)

    @property
    def channels(self):
        return MODES[self.mode]

    @property
    def render_size(self):
        return self.width, self.height

    @property
    def store_size(self):
        return self.store_width, self.store_height

    @property
    def input_shape(self):
        """(stored height, stored width, channels): what readers yield and the model takes."""
        return self.store_height, self.store_width, self.channels

    def encode_label(self, text):
        """Label string -> list of alphabet indices; rejects wrong length or foreign characters."""
        if not self.min_length <= len(text) <= self.length or any(c not in self.alphabet for c in text):
            raise SpecError(f"label {text!r} is not {self.length_text} characters of {self.alphabet!r}")
        return [self.alphabet.index(c) for c in text]

    def decode_label(self, indices):
        """Alphabet indices -> the label string; indices past the alphabet (`pad`) end it."""
        return "".join(self.alphabet[i] for i in itertools.takewhile(lambda i: 0 <= i < self.num_classes, indices))

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
        stored = f" stored {self.store_width}x{self.store_height}" if self.store_size != self.render_size else ""
        return f"{self.length_text} of {self.alphabet!r}, {self.width}x{self.height}{stored} {self.mode} {self.image_format}"


def label_to_filename(text):
    """A label as part of a file name: ASCII letters and digits as they are, any other character as %XX of
    its UTF-8 bytes (so `/`, `_`, `.` or `%` in an alphabet are safe); label_from_filename reverses it."""
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def label_from_filename(part):
    import urllib.parse

    return urllib.parse.unquote(part)


def parse_length(text):
    """'4' -> (4, 4); '4-6' -> (4, 6): the shortest and longest label (`generate --length`)."""
    low, dash, high = str(text).partition("-")
    if not (low.isdigit() and (high.isdigit() or not dash)):
        raise SpecError(f"length {text!r} is a number of characters or a range MIN-MAX, e.g. 4 or 4-6")
    low, high = int(low), int(high) if dash else int(low)
    if not 1 <= low <= high:
        raise SpecError(f"length {text!r}: need 1 <= MIN <= MAX")
    return low, high


def parse_size(text):
    """'WxH' -> (W, H) of positive ints; '' -> (0, 0) (the render size)."""
    if not text:
        return 0, 0
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) and int(h)):
        raise SpecError(f"size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 60x50")
    return int(w), int(h)
