"""One way to find and read dataset.json: `read_manifest` takes a dataset root or a dataset.json path,
local or s3://, with one message when there is none; the trainer side's locator names the path given."""
import json
import os

import pytest

from tfrecord.errors import UserError
from tfrecord.manifest import locate_manifest, read_manifest

MISSING = "no dataset.json (not a dataset written by `captcha-pipeline generate`, or an unfinished one)"


@pytest.fixture(params=["local", "s3"])
def where(request, tiny_dataset, tmp_path, monkeypatch):
    """(the tiny dataset's root, an empty folder) on local disk or on the loopback S3 server."""
    if request.param == "local":
        (tmp_path / "empty").mkdir()
        return str(tiny_dataset), str(tmp_path / "empty")
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("aws_server").url)
    upload = request.getfixturevalue("upload")
    return upload(tiny_dataset, prefix="tiny"), upload(tmp_path / "empty", prefix="empty")


def test_a_root_or_its_dataset_json(where):
    root, _ = where
    manifest = read_manifest(root)
    assert read_manifest(f"{root}/dataset.json") == read_manifest(f"{root}/") == manifest
    assert {s: i.examples for s, i in manifest.splits.items()} == {"train": 120, "validation": 32, "test": 32}


def test_one_message_when_there_is_none(where):
    _, empty = where
    for location in (empty, f"{empty}/nothing-here"):
        with pytest.raises(UserError) as e:
            read_manifest(location)
        assert str(e.value) == f"{location}: {MISSING}"


def test_a_manifest_that_is_not_an_object(tmp_path):
    (tmp_path / "dataset.json").write_text("[]")
    with pytest.raises(UserError, match=r"dataset.json: not a valid dataset manifest \(a JSON list, not an object\)$"):
        read_manifest(str(tmp_path))


def test_the_trainer_side_locator(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTCHA_PIPELINE_OPT_ML", str(tmp_path / "opt_ml"))
    for name in [n for n in os.environ if n.startswith("SM_")]:
        monkeypatch.delenv(name)
    assert locate_manifest(None, f"{tiny_dataset}/test", "--data").seed == 0  # beside the split dir
    with pytest.raises(UserError) as e:
        locate_manifest(None, str(tmp_path / "nope/test"), "--data")
    assert str(e.value) == f"--data {tmp_path}/nope/test: no such folder (and no dataset.json in a `meta` channel)"
    with pytest.raises(UserError) as e:
        locate_manifest(None, str(tiny_dataset), "--train")
    assert str(e.value) == (f"--train {tiny_dataset}: a dataset root, not a split folder; pass one split, "
                            f"e.g. {tiny_dataset}/train")
    meta = tmp_path / "opt_ml/input/data/meta"  # SageMaker's `meta` channel wins over the split dir
    meta.mkdir(parents=True)
    manifest = json.loads((tiny_dataset / "dataset.json").read_text())
    (meta / "dataset.json").write_text(json.dumps({**manifest, "seed": 5}))
    assert locate_manifest(None, str(tmp_path / "nope/test"), "--data").seed == 5
    assert locate_manifest(str(tiny_dataset), str(tmp_path / "nope/test"), "--data").seed == 0  # the flag wins


def test_train_given_a_dataset_root_says_so(tiny_dataset, train_args, tmp_path, capsys):
    from trainer import train

    args = train_args(tiny_dataset, tmp_path)
    args[args.index("--train") + 1] = str(tiny_dataset)
    assert train.main(args) == 2
    assert capsys.readouterr().err == (f"error: --train {tiny_dataset}: a dataset root, not a split folder; "
                                       f"pass one split, e.g. {tiny_dataset}/train\n")
