"""The data contract: spec validation, Example round trip through tf.io.parse_example, framing, manifest."""
import io

import pytest

from tfrecord import framing, schema
from tfrecord.errors import CorruptRecordError, ManifestError, SpecError
from tfrecord.manifest import Manifest, ShardInfo, SplitInfo
from tfrecord.spec import CaptchaSpec


@pytest.mark.parametrize("kwargs, message", [
    (dict(alphabet=""), "alphabet is empty"),
    (dict(length=0), "length must be >= 1"),
    (dict(length=4, width=30), "too small"),
    (dict(height=10), "too small"),
    (dict(mode="CMYK"), "mode must be"),
    (dict(alphabet="aa"), "repeats"),
])
def test_spec_rejects(kwargs, message):
    with pytest.raises(SpecError, match=message):
        CaptchaSpec(**kwargs)


def test_spec_defaults_follow_the_seed():
    spec = CaptchaSpec(length=4)
    assert (spec.width, spec.height) == (120, 100)
    assert CaptchaSpec.from_dict(spec.to_dict()) == spec
    assert spec.encode_label("0907") == [0, 9, 0, 7]
    with pytest.raises(SpecError):
        spec.encode_label("12a4")


def test_example_round_trip_through_parse_example():
    import tensorflow as tf

    spec = CaptchaSpec(alphabet="abc", length=3, width=60, height=30)
    records = [schema.encode_example(b"\x89PNG fake", "cab", spec), schema.encode_example(b"", "aaa", spec)]
    parsed = schema.parse_example(tf.constant(records), spec)
    assert parsed[schema.LABEL].numpy().tolist() == [[2, 0, 1], [0, 0, 0]]
    assert parsed[schema.TEXT].numpy().tolist() == [b"cab", b"aaa"]
    assert parsed[schema.IMAGE].numpy().tolist() == [b"\x89PNG fake", b""]
    assert parsed[schema.WIDTH].numpy().tolist() == [60, 60] and parsed[schema.HEIGHT].numpy().tolist() == [30, 30]
    assert parsed[schema.FORMAT].numpy().tolist() == [b"png", b"png"]
    # The hand-written encoder is what TensorFlow itself would write.
    example = tf.train.Example.FromString(records[0])
    assert example.SerializeToString(deterministic=True) == records[0]


def test_framing_matches_tensorflow_and_detects_corruption(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in (b"one", b"two" * 1000, b""):
            w.write(r)
    data = open(path, "rb").read()
    assert data == b"".join(framing.frame(r) for r in (b"one", b"two" * 1000, b""))
    # Small blocks exercise records split across reads.
    assert list(framing.read_records(io.BytesIO(data), "x", block_size=7)) == [b"one", b"two" * 1000, b""]

    second = len(framing.frame(b"one"))
    for offset, reason in [(second + 2, "header"), (second + 20, "payload")]:
        bad = bytearray(data)
        bad[offset] ^= 0xFF
        with pytest.raises(CorruptRecordError, match=f"x: corrupt record at byte {second}: {reason}"):
            list(framing.read_records(io.BytesIO(bytes(bad)), "x"))
    with pytest.raises(CorruptRecordError, match="stream ends inside a record"):
        list(framing.read_records(io.BytesIO(data[:-3]), "x"))


def test_manifest_round_trip_and_validation():
    m = Manifest(spec=CaptchaSpec(), seed=1, mode="uniform",
                 splits={"train": SplitInfo(examples=3, shards=[ShardInfo("train/a", 3, 10, "00")])})
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(ManifestError, match="do not add up"):
        Manifest.from_json(m.to_json().replace('"examples": 3', '"examples": 4'))
    with pytest.raises(ManifestError, match="not a valid dataset manifest"):
        Manifest.from_json("{not json")
