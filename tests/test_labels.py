"""Label plans, directly: exact counts and partitions on small spaces, constant memory on huge ones."""
import collections
import itertools
import json
import os
import pickle
import subprocess
import sys

import pytest

from beam_jobs.labels import PermutationLabels, Shuffle, UniformLabels, unrank_arrangement, unrank_string
from tfrecord.spec import ALPHABETS, CaptchaSpec

DIGITS3 = CaptchaSpec(alphabet=ALPHABETS["digits"], length=3)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_shuffle_is_a_seeded_bijection(n):
    shuffle = Shuffle(n, 0, "test")
    images = [shuffle(i) for i in range(n)]
    assert sorted(images) == list(range(n))
    assert [shuffle.inverse(y) for y in images] == list(range(n))
    if n >= 64:
        assert images != [Shuffle(n, 1, "test")(i) for i in range(n)]  # the seed matters
        assert sum(a < b for a, b in zip(images, images[1:])) < 0.6 * n  # not (nearly) in order
    with pytest.raises(IndexError):
        shuffle(n)


def test_unranking_is_lexicographic_order():
    assert [unrank_string(r, "abc", 2) for r in range(9)] == ["".join(p) for p in itertools.product("abc", repeat=2)]
    assert [unrank_arrangement(r, "abcd", 3) for r in range(24)] == ["".join(p) for p in itertools.permutations("abcd", 3)]


def test_permutations_every_arrangement_exactly_rounds_times_and_spread_over_shards():
    labels = PermutationLabels(DIGITS3, seed=0, rounds={"train": 2, "test": 1})
    train = [labels.label("train", i) for i in range(2 * 720)]
    assert collections.Counter(train) == {"".join(p): 2 for p in itertools.permutations("0123456789", 3)}
    assert all(len(set(text)) == 3 for text in train)
    assert sorted(labels.label("test", i) for i in range(720)) == sorted(set(train))
    shards = [collections.Counter(train[s::4]) for s in range(4)]  # example i goes to shard i % 4
    assert all(len(shard) > 300 for shard in shards)  # each shard sees a broad sample, not a block
    assert train != [PermutationLabels(DIGITS3, seed=1, rounds={"train": 2}).label("train", i) for i in range(1440)]


def test_uniform_holdout_partition_is_exact_and_disjoint():
    spec = CaptchaSpec(alphabet="abcdefg", length=3)  # 343 labels: 34 held out
    labels = UniformLabels(spec, seed=3, holdout_fraction=0.1)
    space = ["".join(p) for p in itertools.product(spec.alphabet, repeat=3)]
    held_out = {text for text in space if labels.is_holdout(text)}
    assert len(held_out) == labels.held_out == 34
    train = collections.Counter(labels.label("train", i) for i in range(6000))
    assert not set(train) & held_out and len(train) == 343 - 34  # every non-held-out label drawn
    expected = 6000 / len(train)  # uniform: chi-square with 308 degrees of freedom, mean 308, sd 25
    assert sum((n - expected) ** 2 / expected for n in train.values()) < 308 + 5 * 25
    for split in ("validation", "test"):
        assert {labels.label(split, i) for i in range(600)} == held_out


@pytest.mark.parametrize("alphabet, length, fraction, held_out",
                         [("ab", 1, 0.1, 1), ("ab", 1, 0.9, 1), ("abc", 2, 0.5, 4), ("abcd", 2, 0.9, 14)])
def test_uniform_holdout_is_rounded_and_clamped_to_leave_both_sides(alphabet, length, fraction, held_out):
    assert UniformLabels(CaptchaSpec(alphabet=alphabet, length=length), 0, fraction).held_out == held_out


def test_labels_depend_only_on_seed_split_and_index_and_survive_pickling():
    spec = CaptchaSpec(alphabet=ALPHABETS["digits"] + ALPHABETS["lower"], length=5)
    for make in (lambda: UniformLabels(spec, 5, 0.1), lambda: UniformLabels(spec, 5),
                 lambda: PermutationLabels(spec, 5, {"train": 2})):
        a, b = make(), pickle.loads(pickle.dumps(make()))  # as Beam ships them to workers
        forward = [a.label("train", i) for i in (0, 7, 123456)]
        assert [b.label("train", i) for i in (123456, 7, 0)] == forward[::-1]


FIRST_LABELS = """
import json, re, tracemalloc
from beam_jobs.labels import PermutationLabels, UniformLabels
from tfrecord.spec import CaptchaSpec
tracemalloc.start()
spec = CaptchaSpec(alphabet="0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", length=6)
plans = [PermutationLabels(spec, 0, {"train": 3, "test": 1}), UniformLabels(spec, 0, 0.1)]
labels = [plan.label(split, i) for plan in plans for split in ("train", "test") for i in range(10)]
allocated = tracemalloc.get_traced_memory()[1]  # the most Python memory held at once while planning and labelling
peak_kb = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1))  # this process only
print(json.dumps({"allocated": allocated, "rss_mb": peak_kb / 1024, "labels": labels}))
"""


def test_first_labels_of_a_huge_plan_come_at_once_in_little_memory():
    """-d -l -u --length 6 -n 3: 132,784,961,040 train examples, the first labels in a fresh process."""
    out = subprocess.run([sys.executable, "-c", FIRST_LABELS], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    result = json.loads(out.stdout)
    assert result["allocated"] < 1 << 20 and result["rss_mb"] < 60  # no list of labels or arrangements is built
    assert all(len(text) == 6 for text in result["labels"]) and len(set(result["labels"])) == 40
    assert all(len(set(text)) == 6 for text in result["labels"][:20])  # permutations: distinct characters
