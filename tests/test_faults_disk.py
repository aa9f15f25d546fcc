"""Every file is written whole or not at all, through one helper (tfrecord.localfs): on a full disk every
command prints one line naming the path and "no space left on device", exits 2, and leaves no partial file
and no temp file; a file it was replacing keeps its old bytes.

The full disk is a small tmpfs (the tests run as root); where mounting is not permitted they are skipped."""
import json
import os
import re
import subprocess

import pytest

from tfrecord import localfs

NO_SPACE = "no space left on device"


@pytest.fixture
def disk(tmp_path):
    """disk(free_bytes, {relpath: bytes}) -> a folder on a fresh 1 MiB tmpfs holding these files, then filled up
    to `free_bytes` left."""
    mounts = []

    def make(free_bytes=0, before=None):
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); the full-disk tests need root")
        mounts.append(folder)
        for relpath, data in (before or {}).items():
            (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
            (folder / relpath).write_bytes(data)
        stat = os.statvfs(folder)
        with open(folder / ".filler", "wb") as f:
            f.write(b"\0" * (stat.f_bavail * stat.f_frsize - free_bytes))
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def one_line(capsys, path):
    err = capsys.readouterr().err
    assert err == f"error: {path}: {NO_SPACE}\n"


def files(folder):
    """Every file under `folder` but the filler, with its bytes."""
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(folder) for f in names if f != ".filler"}


def test_the_helper_keeps_the_old_file_and_leaves_no_temp(disk):
    folder = disk(0, {"report.json": b"older"})
    target = folder / "report.json"
    with pytest.raises(localfs.NoSpace, match=f"^{target}: {NO_SPACE}$"):
        localfs.write_atomic(target, b"x" * 10000)
    with pytest.raises(localfs.NoSpace, match=f"^{folder}/new/state.npz: {NO_SPACE}$"):
        with localfs.atomic_file(folder / "new" / "state.npz") as f:
            f.write(b"x" * 10000)
    assert files(folder) == {"report.json": b"older"}


@pytest.mark.parametrize("flag, name", [("--report", "evaluation.json"), ("--gallery", "errors.png"),
                                        ("--samples", "samples/older.png")])
def test_evaluate_on_a_full_disk(disk, tmp_path, tiny_dataset, tiny_model, capsys, flag, name):
    """An older report or gallery at the path keeps its bytes (not truncated to 0), and no temp is left."""
    from trainer import evaluate

    older = {name: b"older"}
    folder = disk(0, older)
    target = folder / name if flag != "--samples" else folder / "samples"
    outputs = {"--report": tmp_path / "evaluation.json", "--gallery": tmp_path / "errors.png", flag: target}
    argv = ["--model-dir", str(tiny_model), "--data", str(tiny_dataset / "test"),
            *(a for f, path in outputs.items() for a in (f, str(path)))]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {target}") and err.endswith(f": {NO_SPACE}\n"), err
    assert files(folder) == older


def test_inspect_contact_sheet_on_a_full_disk(disk, tiny_dataset, capsys):
    from launch import inspect_dataset

    sheet = disk(0, {"sheet.png": b"older"}) / "sheet.png"
    assert inspect_dataset.main([str(tiny_dataset), "--contact-sheet", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"error: {sheet}: {NO_SPACE}\n") and files(sheet.parent) == {"sheet.png": b"older"}


def test_generate_on_a_full_disk(disk, capsys):
    from beam_jobs import generate, output
    from test_storage import SMALL

    out = disk(8192) / "out"  # room for the folders, the lock and maybe a shard, not for all the shards
    assert generate.main(["--output", str(out), *SMALL]) == 2
    err = capsys.readouterr().err  # progress lines, then the error; Beam adds the step: "... [while running '...']"
    assert err.count("error:") == 1 and re.fullmatch(rf"error: {out}/\w+/[\w-]+\.tfrecord: {NO_SPACE}( \[while running .*\])?",
                                                     err.splitlines()[-1]), err
    assert all(output.in_layout(f) for f in files(out))  # whole shards of an interrupted run, no temp, no manifest, no lock


def test_a_checkpoint_on_a_full_disk_leaves_no_temp_and_a_clear_line(disk, tmp_path, tiny_dataset, train_args, capsys):
    from trainer import train

    checkpoints = disk(16384)  # the lock and the spec fit, the training state does not
    argv = train_args(tiny_dataset, tmp_path, "--epochs", "1") + ["--checkpoint-dir", str(checkpoints)]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"error: {checkpoints}/training_state.npz: {NO_SPACE}"
    assert set(files(checkpoints)) == {"captcha_spec.json"}
    assert json.loads(files(checkpoints)["captcha_spec.json"])["alphabet"] == "0123456789"


def test_job_artifacts_on_a_full_disk(disk, tmp_path, monkeypatch):
    """Packaging into a full folder, and uploading into a full output: one line naming the path, and no
    partial tarball in either place."""
    from launch import artifacts
    from tfrecord import sagemaker

    monkeypatch.setenv(sagemaker.ROOT_ENV, str(tmp_path / "root"))
    for folder in (sagemaker.model_dir(), sagemaker.output_data_dir()):
        os.makedirs(folder)
    with open(os.path.join(sagemaker.model_dir(), "weights.bin"), "wb") as f:
        f.write(os.urandom(20000))  # does not compress
    full = disk(8192)  # room for output.tar.gz, not for model.tar.gz
    with pytest.raises(localfs.NoSpace, match=f"^{full}/package/model.tar.gz: {NO_SPACE}$"):
        artifacts.package(str(tmp_path / "root"), str(full / "package"), False, False)
    assert set(files(full)) == {"package/output.tar.gz"}
    names = artifacts.package(str(tmp_path / "root"), str(tmp_path / "package"), False, False)
    with pytest.raises(artifacts.UploadFailed, match=f"{full}/job/output/model.tar.gz: {NO_SPACE}; the job's outputs are kept in"):
        artifacts.upload(str(tmp_path / "package"), names, str(full / "job" / "output"))
    assert set(files(full)) == {"package/output.tar.gz"}  # nothing of the upload


def test_an_export_on_a_full_disk_is_one_line_and_never_looks_complete(disk, tiny_spec):
    from trainer import export
    from trainer.model import build_model

    model_dir = disk(0) / "model"
    with pytest.raises(localfs.NoSpace, match=f"^{model_dir}: {NO_SPACE} \\(the export is incomplete and has no spec\\)$"):
        export.export(build_model(tiny_spec, scale=1), tiny_spec, str(model_dir))
    with pytest.raises(Exception, match="not an exported captcha model"):
        export.load(str(model_dir))
