"""Label plans: which text each example of each split shows, a pure function of (options, seed, index).

Nothing is materialised, whatever the size of the label space: label i is computed on demand, in
constant memory. A seeded `Shuffle` (a bijection of [0, n)) turns an index or a rank into another,
and a rank becomes a string by unranking it: in base |alphabet|, or by its Lehmer code (factorial
number system) for arrangements of distinct characters.

uniform:       labels drawn uniformly from alphabet^length (repeats allowed); with a length range, the
               length uniformly first, then the characters. With holdout, exactly round(space * fraction)
               labels of each length (at least 1, at most space - 1) are held out: validation and test
               draw uniformly from them, train uniformly from the rest, so no validation or test label
               ever occurs in train.
permutations:  the seed's plan (`gen_captcha.py -n N`): every ordered arrangement of `length`
               distinct characters exactly `rounds[split]` times, in a seeded order spread over the split.
"""
import fractions
import hashlib
import math
import random

from tfrecord.errors import UserError
from tfrecord.manifest import TRAIN
from tfrecord.spec import CaptchaSpec

FEISTEL_ROUNDS = 4  # Luby-Rackoff: four rounds of a pseudo-random function give a strong pseudo-random permutation


class Shuffle:
    """A seeded bijection of [0, n): a balanced Feistel network over the smallest even power of two
    >= n, cycle-walked back into [0, n). Keyed by `key` (any strings); O(1) memory."""

    def __init__(self, n, *key):
        if n < 1:
            raise ValueError(f"cannot shuffle {n} items")
        self.n, self.key = n, key
        self._half = max(1, ((n - 1).bit_length() + 1) // 2)
        self._mask = (1 << self._half) - 1
        self._bytes = (self._half + 7) // 8
        # a round function wider than a digest (spaces beyond 2^1024) mixes only the low bits: still a bijection
        self._key = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=min(64, self._bytes))

    def __reduce__(self):  # pickled (into Beam workers) as its arguments: hash states do not pickle
        return Shuffle, (self.n, *self.key)

    def _round(self, r, half):
        h = self._key.copy()
        h.update(bytes([r]) + half.to_bytes(self._bytes, "little"))
        return int.from_bytes(h.digest(), "little") & self._mask

    def _encrypt(self, x):
        left, right = x >> self._half, x & self._mask
        for r in range(FEISTEL_ROUNDS):
            left, right = right, left ^ self._round(r, right)
        return left << self._half | right

    def _decrypt(self, x):
        left, right = x >> self._half, x & self._mask
        for r in reversed(range(FEISTEL_ROUNDS)):
            left, right = right ^ self._round(r, left), left
        return left << self._half | right

    def _walk(self, step, x):
        if not 0 <= x < self.n:
            raise IndexError(f"{x} is outside [0, {self.n})")
        x = step(x)
        while x >= self.n:  # leaves the domain at most a few times on average: it is < 4n
            x = step(x)
        return x

    def __call__(self, x):
        return self._walk(self._encrypt, x)

    def inverse(self, y):
        return self._walk(self._decrypt, y)


def unrank_string(rank, alphabet, length):
    """The rank-th string of alphabet^length in lexicographic (alphabet) order."""
    chars = []
    for _ in range(length):
        rank, digit = divmod(rank, len(alphabet))
        chars.append(alphabet[digit])
    return "".join(reversed(chars))


def rank_string(text, alphabet):
    rank = 0
    for c in text:
        rank = rank * len(alphabet) + alphabet.index(c)
    return rank


def unrank_arrangement(rank, alphabet, length):
    """The rank-th arrangement of `length` distinct characters in lexicographic order (Lehmer code)."""
    remaining, chars = list(alphabet), []
    for i in range(length):
        digit, rank = divmod(rank, math.perm(len(remaining) - 1, length - i - 1))
        chars.append(remaining.pop(digit))
    return "".join(chars)


class UniformLabels:
    """Fixed length: uniform over alphabet^length. Variable length (`spec.min_length` < `spec.length`): each
    label's length uniform over the range, then its characters uniform; holdout partitions every length's
    strings (so the union of the label spaces) with its own seeded Shuffle."""

    def __init__(self, spec: CaptchaSpec, seed, holdout_fraction=None):
        self.spec, self.seed, self.holdout_fraction = spec, seed, holdout_fraction
        self.spaces = {length: spec.num_classes ** length for length in spec.lengths}
        self.space = sum(self.spaces.values())
        if holdout_fraction is not None:
            if min(self.spaces.values()) < 2:
                raise UserError(f"--holdout-labels needs at least 2 possible labels, this alphabet and length give {self.space}")
            self.held_outs = {length: min(space - 1, max(1, round(space * fractions.Fraction(repr(holdout_fraction)))))
                              for length, space in self.spaces.items()}
            self.held_out = sum(self.held_outs.values())
            # held out: the ranks its length's Shuffle maps below held_outs[length] (a fixed length keeps its old key)
            self._shuffles = {length: Shuffle(space, seed, "holdout", *([length] if spec.variable else []))
                              for length, space in self.spaces.items()}

    def is_holdout(self, text):
        return self._shuffles[len(text)](rank_string(text, self.spec.alphabet)) < self.held_outs[len(text)]

    def label(self, split, index):
        draw = random.Random(f"{self.seed}/label/{split}/{index}")
        length = draw.randint(self.spec.min_length, self.spec.length) if self.spec.variable else self.spec.length
        space = self.spaces[length]
        if self.holdout_fraction is None:
            rank = draw.randrange(space)
        elif split == TRAIN:
            held_out = self.held_outs[length]
            rank = self._shuffles[length].inverse(held_out + draw.randrange(space - held_out))
        else:
            rank = self._shuffles[length].inverse(draw.randrange(self.held_outs[length]))
        return unrank_string(rank, self.spec.alphabet, length)


class PermutationLabels:
    def __init__(self, spec: CaptchaSpec, seed, rounds):
        if spec.variable:
            raise UserError(f"--permutations takes one --length, not the range {spec.length_text}: "
                            "generate uniform labels (--train-examples) for variable lengths")
        if spec.length > spec.num_classes:
            raise UserError(f"--permutations needs length <= alphabet size ({spec.length} > {spec.num_classes})")
        self.spec, self.seed, self.rounds = spec, seed, rounds
        self._orders = {}

    @staticmethod
    def count(spec):
        return math.perm(spec.num_classes, spec.length)

    def label(self, split, index):
        arrangements = self.count(self.spec)
        if split not in self._orders:  # a position in [0, rounds * arrangements) per index, each once
            self._orders[split] = Shuffle(self.rounds[split] * arrangements, self.seed, "order", split)
        position = self._orders[split](index)
        return unrank_arrangement(position % arrangements, self.spec.alphabet, self.spec.length)
