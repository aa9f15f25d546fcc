"""Label plans: which text each example of each split shows, a pure function of (options, seed, index).

uniform:       labels drawn uniformly from alphabet^length (repeats allowed); with holdout, the label
               space is partitioned so validation/test labels never occur in train.
permutations:  the seed's plan (`gen_captcha.py -n N`): every ordered arrangement of `length`
               distinct characters, N rounds for train and max(1, int(N * ratio)) for test, shuffled.
"""
import hashlib
import itertools
import math
import random

from tfrecord.errors import UserError
from tfrecord.spec import CaptchaSpec

EXACT_PARTITION_LIMIT = 1_000_000  # label spaces up to this size are partitioned exactly


def _hash01(*parts):
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class UniformLabels:
    def __init__(self, spec: CaptchaSpec, seed, holdout_fraction=None):
        self.spec, self.seed, self.holdout_fraction = spec, seed, holdout_fraction
        self._holdout = None
        space = spec.num_classes ** spec.length
        if holdout_fraction is not None and space <= EXACT_PARTITION_LIMIT:
            if space < 2:
                raise UserError(f"--holdout-labels needs at least 2 possible labels, this alphabet and length give {space}")
            labels = sorted(self._all_labels(), key=lambda t: _hash01(seed, "holdout", t))
            self._holdout = frozenset(labels[:min(space - 1, max(1, round(space * holdout_fraction)))])

    def _all_labels(self):
        return ("".join(p) for p in itertools.product(self.spec.alphabet, repeat=self.spec.length))

    def is_holdout(self, text):
        if self._holdout is not None:
            return text in self._holdout
        return _hash01(self.seed, "holdout", text) < self.holdout_fraction

    def label(self, split, index):
        rng = random.Random(f"{self.seed}/label/{split}/{index}")
        while True:
            text = "".join(rng.choice(self.spec.alphabet) for _ in range(self.spec.length))
            if self.holdout_fraction is None or self.is_holdout(text) == (split != "train"):
                return text


class PermutationLabels:
    def __init__(self, spec: CaptchaSpec, seed, rounds):
        if spec.length > spec.num_classes:
            raise UserError(f"--permutations needs length <= alphabet size ({spec.length} > {spec.num_classes})")
        self.spec, self.seed, self.rounds = spec, seed, rounds
        self._arrangements = None
        self._orders = {}

    @staticmethod
    def count(spec):
        return math.perm(spec.num_classes, spec.length)

    def label(self, split, index):
        if self._arrangements is None:
            self._arrangements = ["".join(p) for p in itertools.permutations(self.spec.alphabet, self.spec.length)]
        if split not in self._orders:  # every arrangement `rounds[split]` times, spread out, not in order
            order = list(range(len(self._arrangements) * self.rounds[split]))
            random.Random(f"{self.seed}/order/{split}").shuffle(order)
            self._orders[split] = order
        return self._arrangements[self._orders[split][index] % len(self._arrangements)]
