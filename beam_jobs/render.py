"""Deterministic captcha rendering.

captcha 0.7 draws every random number from the `secrets` module, which cannot be seeded. We route
the module's `secrets` through a per-thread seeded `random.Random`, so one (seed, split, index) gives
the same image on any runner, process or thread. Outside `Renderer.render` it falls back to `secrets`.

Captchas are drawn at the spec's render size; when the stored size differs they are downscaled with
PIL's BOX filter (an area average: the serving signature's `tf.image.resize(method="area")` matches it),
then stored as PNG or as raw uint8 pixels. Characters are drawn at captcha's font sizes, scaled down
where they would not fit the height (font_sizes); before a job, check_fonts and check_drawable refuse
fonts and characters that captcha cannot draw.
"""
import hashlib
import io
import os
import random
import secrets
import threading

import captcha.image
from PIL import Image, ImageDraw, ImageFont

from tfrecord.errors import UserError
from tfrecord.spec import CaptchaSpec

DEFAULT_FONT_SIZES = (42, 50, 56)  # captcha's own: each character is drawn at one of these, picked at random

_local = threading.local()


class _SeededSecrets:
    """Stands in for the `secrets` module inside captcha.image."""

    @staticmethod
    def _rng():
        return getattr(_local, "rng", None)

    def randbelow(self, n):
        rng = self._rng()
        return rng.randrange(n) if rng else secrets.randbelow(n)

    def randbits(self, k):
        rng = self._rng()
        return rng.getrandbits(k) if rng else secrets.randbits(k)

    def choice(self, seq):
        rng = self._rng()
        return rng.choice(seq) if rng else secrets.choice(seq)


captcha.image.secrets = _SeededSecrets()


def example_seed(seed, split, index):
    """A 64-bit seed for one example, independent of where and in which order it is rendered."""
    digest = hashlib.blake2b(f"{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def fonts(spec):
    """The font files a spec's captchas are drawn with: its own, else captcha's bundled ones."""
    return spec.fonts or tuple(captcha.image.DEFAULT_FONTS)


def font_sizes(spec):
    """The sizes captcha draws the spec's characters at: its own (DEFAULT_FONT_SIZES) where they fit.

    captcha draws each character into a box as large as the font says the character is, stretches the
    character's ink over it, and pastes the box centred in the image's height: a box taller than the
    height is cut. So where the tallest box at the largest size (over the spec's fonts and alphabet) is
    taller than the height, all the sizes are scaled down by the same factor until it fits. A function of
    the spec alone, so every worker draws the same; generate records scaled sizes in dataset.json.
    """
    sizes = DEFAULT_FONT_SIZES
    while (tallest := _tallest(spec, sizes[-1])[0]) > spec.height:
        scale = min(spec.height / tallest, (sizes[-1] - 1) / sizes[-1])
        sizes = tuple(max(1, int(size * scale)) for size in sizes)
    return sizes


def _tallest(spec, size):
    """(height, character, font file) of the tallest character box at `size` over the spec's fonts."""
    return max((_box(ImageFont.truetype(path, size), c)[1], c, path) for path in fonts(spec) for c in spec.alphabet)


def check_fonts(spec):
    """Refuse font files that are missing or are not fonts (UserError)."""
    for path in fonts(spec):
        if not os.path.isfile(path):
            raise UserError(f"font file not found: {path}")
        try:
            ImageFont.truetype(path, DEFAULT_FONT_SIZES[0])
        except OSError as e:
            raise UserError(f"--font {path}: not a font ({e})") from None


def check_drawable(spec, sizes):
    """Refuse, before any work, characters that captcha cannot draw at `sizes` (fonts checked).

    captcha draws each character on its own with a font and a size picked at random. So for every font
    and character: the font must have the character (one missing from its character map is drawn as its
    .notdef glyph: a box, or nothing), and the character must leave ink in its box when drawn alone (a
    combining mark is drawn outside it). The sizes fit the height (font_sizes); a text wider than the
    image is squeezed, not cut (the spec checks the width: MIN_CHAR_WIDTH). Raises UserError naming the
    font and the characters.
    """
    for path in fonts(spec):
        smallest, name = ImageFont.truetype(path, sizes[0]), os.path.basename(path)
        missing = _glyph(smallest, "\uffff")  # a noncharacter: never in a character map
        cannot = [c for c in spec.alphabet if _glyph(smallest, c) in (missing, None)]
        if cannot:
            raise UserError(f"font {name} cannot draw {''.join(cannot)!r}; "
                            "choose other characters or pass --font files that have them")
        blank = [c for c in spec.alphabet if not _inks(smallest, c)]
        if blank:
            raise UserError(f"font {name} draws no ink for {''.join(blank)!r} on its own (a combining mark?): "
                            "captcha draws each character alone; choose characters that stand alone")


def _glyph(font, char):
    """The bitmap `font` draws for `char`, or None if it draws nothing."""
    mask = font.getmask(char)
    ink = bytes(mask)
    return (mask.size, ink) if any(ink) else None


def _box(font, char):
    """(width, height) of the box captcha draws `char` into with `font` (ImageCaptcha._draw_character)."""
    _, _, width, height = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox((1, 1), char, font=font)
    return int(width), int(height)


def _inks(font, char):
    """Whether `char` drawn alone into its box, as captcha draws it, leaves any ink there."""
    box = Image.new("L", tuple(max(1, side) for side in _box(font, char)))
    ImageDraw.Draw(box).text((0, 0), char, font=font, fill=255)
    return box.getbbox() is not None


class Renderer:
    def __init__(self, spec: CaptchaSpec):
        self.spec = spec
        self._captcha = captcha.image.ImageCaptcha(spec.width, spec.height, fonts=list(fonts(spec)),
                                                   font_sizes=font_sizes(spec))

    def image(self, text, seed):
        """The PIL image for `text` at the render size, in the spec's color mode."""
        _local.rng = random.Random(seed)
        try:
            img = self._captcha.generate_image(text)
        finally:
            _local.rng = None
        return img if img.mode == self.spec.mode else img.convert(self.spec.mode)

    def store(self, img):
        """A render-size PIL image -> the bytes stored: box-filter downscaled to the stored size if that
        differs, then PNG or raw pixels (H*W*C uint8)."""
        if img.size != self.spec.store_size:
            img = img.resize(self.spec.store_size, Image.BOX)
        if self.spec.image_format == "raw":
            return img.tobytes()
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def render(self, text, seed):
        """Encoded image bytes for `text`, as stored."""
        return self.store(self.image(text, seed))
