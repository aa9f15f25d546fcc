"""Deterministic captcha rendering.

captcha 0.7 draws every random number from the `secrets` module, which cannot be seeded. We route
the module's `secrets` through a per-thread seeded `random.Random`, so one (seed, split, index) gives
the same image on any runner, process or thread. Outside `Renderer.render` it falls back to `secrets`.

Captchas are drawn at the spec's render size; when the stored size differs they are downscaled with
PIL's BOX filter (an area average: the serving signature's `tf.image.resize(method="area")` matches it),
then stored as PNG or as raw uint8 pixels.
"""
import hashlib
import io
import random
import secrets
import threading

import captcha.image
from PIL import Image

from tfrecord.spec import CaptchaSpec

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


class Renderer:
    def __init__(self, spec: CaptchaSpec):
        self.spec = spec
        self._captcha = captcha.image.ImageCaptcha(spec.width, spec.height, fonts=list(spec.fonts) or None)

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
