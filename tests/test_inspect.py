"""inspect: a valid dataset passes with a contact sheet; every kind of damage names the shard (and record)."""
import hashlib
import io
import json
import shutil

import pytest
from PIL import Image

from beam_jobs.render import Renderer
from launch import inspect_dataset
from tfrecord import schema
from tfrecord.framing import frame, read_records
from tfrecord.manifest import read_manifest
from tfrecord.schema import encode_example
from tfrecord.spec import CaptchaSpec


@pytest.fixture
def dataset(tiny_dataset, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_dataset, copy)
    return copy


def test_a_valid_dataset_passes_and_draws_a_contact_sheet(dataset, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert inspect_dataset.main([str(dataset), "--contact-sheet", str(sheet), "--samples", "12"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "ok: 184 examples match dataset.json" in out
    assert "(12 images)" in out  # 4 from each split
    image = Image.open(sheet).convert("L")
    cell_w, cell_h = 40 + 4, 24 + 14 + 4  # 40x24 images, 2 px padding around each, a 14 px caption below
    assert image.size == (8 * cell_w, 2 * cell_h)  # 8 columns, 12 images -> 2 rows
    for k in range(16):
        x, y = (k % 8) * cell_w, (k // 8) * cell_h
        picture = image.crop((x + 2, y + 2, x + 42, y + 26))
        caption = image.crop((x, y + 26, x + cell_w, y + cell_h))
        drawn = [picture.getextrema()[0] < 250, caption.getextrema()[0] < 128]  # not white; black text
        assert drawn == ([True, True] if k < 12 else [False, False]), k  # a captioned image in each used cell


def test_s3_dataset_through_aws_endpoint_url(tiny_dataset, s3, upload, monkeypatch, capsys):
    """boto3's own AWS_ENDPOINT_URL reaches every S3 call, as --s3_endpoint_url does."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    data = upload(tiny_dataset, prefix="tiny")
    assert inspect_dataset.main([data]) == 0
    assert "ok: 184 examples match dataset.json" in capsys.readouterr().out


def test_the_example_decoder_reads_what_tensorflow_writes():
    """schema.decode_example (pure Python, used by inspect and the tests) against TensorFlow's protobuf."""
    import tensorflow as tf

    features = {"b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x", b"", bytes(range(256))])),
                "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[-3, 0, 2**40, -(2**63)])),
                "f": tf.train.Feature(float_list=tf.train.FloatList(value=[1.5, -2.0])),
                "empty": tf.train.Feature()}
    serialized = tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
    assert schema.decode_example(serialized) == {"b": [b"x", b"", bytes(range(256))], "i": [-3, 0, 2**40, -(2**63)],
                                                 "f": [1.5, -2.0], "empty": []}
    spec = CaptchaSpec(alphabet="01", length=2, width=40, height=24)
    ours = schema.decode_example(encode_example(b"\x89PNG", "10", spec))
    assert ours[schema.TEXT] == [b"10"] and ours[schema.LABEL] == [1, 0] and ours[schema.IMAGE] == [b"\x89PNG"]
    for cut in (1, len(serialized) // 2, len(serialized) - 1):
        with pytest.raises(ValueError, match="truncated"):
            schema.decode_example(serialized[:cut])


def rewrite_record(dataset, shard_path, index, record):
    """Replace one record of a shard and make the manifest agree, as a buggy producer might."""
    path = dataset / shard_path
    records = list(read_records(io.BytesIO(path.read_bytes()), shard_path))
    records[index] = record
    data = b"".join(frame(r) for r in records)
    path.write_bytes(data)
    manifest = json.loads((dataset / "dataset.json").read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        if shard["path"] == shard_path:
            shard.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (dataset / "dataset.json").write_text(json.dumps(manifest))


def fail(dataset, capsys):
    assert inspect_dataset.main([str(dataset)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_damage_is_named(dataset, capsys):
    shard = read_manifest(str(dataset)).split("train").shards[0].path
    spec = read_manifest(str(dataset)).spec
    wrong_size = CaptchaSpec(alphabet=spec.alphabet, length=2, width=50, height=24)
    image = Renderer(wrong_size).render("12", 1)
    rewrite_record(dataset, shard, 1, encode_example(image, "12", spec))
    assert f"{shard} record 1: image is L 50x24, spec says L 40x24" in fail(dataset, capsys)

    (dataset / shard).write_bytes((dataset / shard).read_bytes()[:-1])
    assert f"{shard}: size or sha256 differs" in fail(dataset, capsys)

    (dataset / shard).unlink()
    assert f"{shard}: listed in the manifest but missing" in fail(dataset, capsys)


def test_a_corrupt_crc_names_the_shard_and_byte_offset(dataset, capsys):
    """A bit flipped in record 2's payload (the manifest's size and sha256 made to agree, so only the CRC
    can see it), then in record 1's length header: the line names the shard and the record's byte offset."""
    shard = read_manifest(str(dataset)).split("train").shards[0].path
    original = (dataset / shard).read_bytes()
    records = list(read_records(io.BytesIO(original), shard))
    starts = [sum(len(frame(r)) for r in records[:i]) for i in range(len(records))]

    def corrupt_at(position):
        data = bytearray(original)
        data[position] ^= 0x01
        (dataset / shard).write_bytes(bytes(data))
        manifest = json.loads((dataset / "dataset.json").read_text())
        for entry in manifest["splits"]["train"]["shards"]:
            if entry["path"] == shard:
                entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        (dataset / "dataset.json").write_text(json.dumps(manifest))

    corrupt_at(starts[2] + 12 + 5)  # the 6th payload byte of record 2 (after its 12-byte header)
    assert fail(dataset, capsys) == f"error: {shard}: corrupt record at byte {starts[2]}: payload CRC mismatch\n"
    corrupt_at(starts[1])  # record 1's length field
    assert fail(dataset, capsys) == f"error: {shard}: corrupt record at byte {starts[1]}: header (length) CRC mismatch\n"


def test_a_stray_file_in_a_split_folder_is_refused(dataset, capsys):
    (dataset / "train" / "notes.txt").write_text("x")
    assert "notes.txt: not in the manifest" in fail(dataset, capsys)


def test_no_manifest_is_not_a_dataset(dataset, capsys):
    (dataset / "dataset.json").unlink()
    assert "data: no dataset.json (not a dataset written by" in fail(dataset, capsys)


def test_a_manifest_that_is_not_an_object_is_one_line(dataset, capsys):
    (dataset / "dataset.json").write_text("[]")
    assert "dataset.json: not a valid dataset manifest (a JSON list, not an object)" in fail(dataset, capsys)


def test_unknown_flags_are_refused(dataset, capsys):
    assert inspect_dataset.main([str(dataset), "--contact-shet", "x.png"]) == 2
    assert capsys.readouterr().err == "error: unknown flag --contact-shet (see --help)\n"
