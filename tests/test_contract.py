"""The data contract: spec validation, Example round trip through tf.io.parse_example, framing, manifest."""
import dataclasses
import hashlib
import io
import shutil

import numpy as np
import pytest

from tfrecord import framing, schema
from tfrecord.errors import CorruptRecordError, ManifestError, SpecError
from tfrecord.manifest import Manifest, ShardInfo, SplitInfo
from tfrecord.spec import CaptchaSpec, label_from_filename, label_to_filename, parse_size


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
    with pytest.raises(SpecError, match=r"^label '12a4' is not 4 characters of '0123456789'$"):
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
                 splits={"train": SplitInfo(examples=3, shards=[ShardInfo("train/a.tfrecord", 3, 48, "0" * 64)])})
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(ManifestError, match="do not add up"):
        Manifest.from_json(m.to_json().replace('"examples": 3', '"examples": 4'))
    with pytest.raises(ManifestError, match="not a valid dataset manifest"):
        Manifest.from_json("{not json")


def test_store_size_and_format_fields():
    spec = CaptchaSpec(length=4, image_format="raw", store_width=60, store_height=50)
    assert spec.render_size == (120, 100) and spec.store_size == (60, 50) and spec.input_shape == (50, 60, 1)
    assert CaptchaSpec.from_dict(spec.to_dict()) == spec and "120x100 stored 60x50 L raw" in spec.describe()
    # a dataset.json written before the fields existed: stored size = render size, PNG
    old = {"alphabet": "0123456789", "length": 4, "width": 120, "height": 100, "mode": "RGB",
           "image_format": "png", "fonts": []}
    assert CaptchaSpec.from_dict(old) == CaptchaSpec(mode="RGB") and CaptchaSpec.from_dict(old).input_shape == (100, 120, 3)
    assert parse_size("60x50") == (60, 50) and parse_size("") == (0, 0)
    for bad in ("60", "60x", "x50", "0x50", "-6x5", "6.5x5"):
        with pytest.raises(SpecError, match="not WIDTHxHEIGHT"):
            parse_size(bad)
    for w, h in ((130, 50), (50, 50), (60, 40)):
        with pytest.raises(SpecError, match="must divide the render size 120x100 \\(e.g. 60x50\\)"):
            CaptchaSpec(store_width=w, store_height=h)
    with pytest.raises(SpecError, match="stored image 30x50 is too small"):
        CaptchaSpec(store_width=30, store_height=50)
    with pytest.raises(SpecError, match="image_format must be"):
        CaptchaSpec(image_format="jpeg")


def test_raw_records_round_trip_and_match_the_box_filter():
    import tensorflow as tf
    from PIL import Image

    from beam_jobs.render import Renderer

    spec = CaptchaSpec(alphabet="abc", length=3, width=80, height=40, mode="RGB", image_format="raw",
                       store_width=40, store_height=20)
    renderer = Renderer(spec)
    raw = renderer.render("cab", 7)
    assert len(raw) == 20 * 40 * 3
    expected = np.asarray(renderer.image("cab", 7).resize((40, 20), Image.BOX))
    parsed = schema.parse_example(tf.constant([schema.encode_example(raw, "cab", spec)] * 2), spec)
    assert parsed[schema.FORMAT].numpy().tolist() == [b"raw"] * 2
    assert parsed[schema.WIDTH].numpy().tolist() == [40, 40] and parsed[schema.HEIGHT].numpy().tolist() == [20, 20]
    pixels = schema.decode_raw(parsed[schema.IMAGE], spec)
    assert pixels.dtype == tf.uint8 and pixels.shape == (2, 20, 40, 3)
    np.testing.assert_array_equal(pixels[1].numpy(), expected)
    np.testing.assert_array_equal(schema.decode_raw(tf.constant(raw), spec).numpy(), expected)
    with pytest.raises(tf.errors.InvalidArgumentError):
        schema.decode_raw(tf.constant([raw + raw]), spec)  # twice the bytes is an error, not two images
    # PNG at the same stored size holds the same pixels; PNG without a store size is the full render
    png = Renderer(dataclasses.replace(spec, image_format="png")).render("cab", 7)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
    full = Renderer(dataclasses.replace(spec, image_format="png", store_width=0, store_height=0)).render("cab", 7)
    assert Image.open(io.BytesIO(full)).size == (80, 40)


def test_raw_dataset_passes_inspect_with_3_kb_records(make_dataset, tmp_path, capsys):
    from PIL import Image

    from launch import inspect_dataset
    from tfrecord.manifest import read_manifest

    root = make_dataset("-d", "--image-format", "raw", "--store-size", "60x50", "--train-examples", "24",
                        "--validation-examples", "8", "--test-examples", "8", "--num-shards", "2")
    manifest = read_manifest(str(root))
    assert manifest.spec.store_size == (60, 50) and manifest.spec.render_size == (120, 100)
    shard = manifest.split("train").shards[0]
    assert 3000 < shard.bytes / shard.records < 3300  # 3,000 pixel bytes + label and framing
    sheet = tmp_path / "sheet.png"
    assert inspect_dataset.main([str(root), "--contact-sheet", str(sheet), "--samples", "8"]) == 0
    assert "120x100 stored 60x50 L raw" in capsys.readouterr().out
    assert Image.open(sheet).size[0] == 8 * (60 + 4)
    # a raw record of the wrong length is named
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    records = list(framing.read_records(io.BytesIO((root / shard.path).read_bytes()), shard.path))
    records[1] = schema.encode_example(b"\0" * 2999, "1234", manifest.spec)
    data = b"".join(framing.frame(r) for r in records)
    (bad / shard.path).write_bytes(data)
    shard.bytes, shard.sha256 = len(data), hashlib.sha256(data).hexdigest()
    (bad / "dataset.json").write_text(manifest.to_json())
    assert inspect_dataset.main([str(bad)]) == 2
    assert f"{shard.path} record 1: raw image has 2999 bytes, spec says 60x50x1 = 3000" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["0907", "a/b_", "%.x", "..", "漢😀"])
def test_labels_as_file_names_are_safe_and_read_back(label):
    name = label_to_filename(label)
    assert all(c.isascii() and (c.isalnum() or c == "%") for c in name)
    assert label_from_filename(name) == label
