"""inspect: a valid dataset passes with a contact sheet; every kind of damage names the shard (and record)."""
import hashlib
import io
import json
import shutil

import pytest
from PIL import Image

from tfrecord import validate
from beam_jobs.render import Renderer
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
    assert validate.main([str(dataset), "--contact-sheet", str(sheet), "--samples", "12"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "ok: 184 examples match dataset.json" in out
    assert Image.open(sheet).size[0] > 0


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
    assert validate.main([str(dataset)]) == 2
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


def test_a_stray_file_in_a_split_folder_is_refused(dataset, capsys):
    (dataset / "train" / "notes.txt").write_text("x")
    assert "notes.txt: not in the manifest" in fail(dataset, capsys)


def test_no_manifest_is_not_a_dataset(dataset, capsys):
    (dataset / "dataset.json").unlink()
    assert "data: no dataset.json (not a dataset written by" in fail(dataset, capsys)
