"""Alphabets and sizes the renderer cannot honour (issue 17 §4): characters that draw nothing on their own
are refused (tests/test_faults_flags.py), and at a height below captcha's glyphs the font sizes are scaled
so that no character is cut, and recorded in dataset.json."""
import string

import captcha.image
from PIL import Image, ImageDraw

from beam_jobs.generate import parse_args
from beam_jobs.plan import build_plan
from beam_jobs.render import DEFAULT_FONT_SIZES, font_sizes
from tfrecord.spec import CaptchaSpec

ALPHABET = string.digits + string.ascii_letters


def drawn_heights(spec, size):
    """The height of each character's box as captcha itself draws it at `size` (ImageCaptcha._draw_character)."""
    drawer = captcha.image.ImageCaptcha(spec.width, spec.height, font_sizes=(size,))
    draw = ImageDraw.Draw(Image.new("RGB", spec.render_size))
    return {c: drawer._draw_character(c, draw, (0, 0, 0, 255)).height for c in spec.alphabet}


def test_at_a_small_height_no_character_is_cut():
    spec = CaptchaSpec(alphabet=ALPHABET, length=4, width=60, height=20)
    assert max(drawn_heights(spec, DEFAULT_FONT_SIZES[-1]).values()) > spec.height  # captcha's sizes would cut
    sizes = font_sizes(spec)
    assert sizes[-1] < DEFAULT_FONT_SIZES[-1]
    assert max(drawn_heights(spec, sizes[-1]).values()) <= spec.height


def test_at_the_default_height_captchas_sizes_are_kept():
    assert font_sizes(CaptchaSpec(alphabet=ALPHABET, length=4)) == DEFAULT_FONT_SIZES


def test_scaled_sizes_are_recorded_in_the_plan():
    small = build_plan(parse_args(["--output", "unused", "-d", "--width", "60", "--height", "20"])[0])
    assert small.options["font_sizes"] == list(font_sizes(small.spec)) and small.options["font_sizes"][-1] < 56
    assert "font_sizes" not in build_plan(parse_args(["--output", "unused", "-d"])[0]).options
