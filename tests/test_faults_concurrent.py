"""Two runs at once never corrupt each other: `generate` holds its output (local: fcntl; S3: a conditional
PUT) and `train` its checkpoint dir for the whole run, so a second run is refused in one line; writers'
temp files have unique names, so two writers of one file never share one."""
import os
import subprocess
import sys

import pytest

from beam_jobs import generate, output
from test_storage import SMALL, location  # noqa: F401  (location is a fixture)
from tfrecord import localfs, storage
from tfrecord.errors import UserError
from tfrecord.manifest import read_manifest
from trainer import checkpoint


def test_a_second_generate_into_one_output_is_refused_while_the_first_runs(location, monkeypatch, capsys):
    """The second run starts while the first holds its output (right after the first's check); it is refused
    in one line, and the first writes its dataset undisturbed."""
    storage.configure(location.settings)
    real_prepare, seconds = output.prepare, []

    def prepare_then_start_another(*args):
        real_prepare(*args)
        capsys.readouterr()
        seconds.append(generate.main(["--output", location.uri, *SMALL, "--seed", "9", *location.flags]))
        seconds.append(capsys.readouterr().err)

    monkeypatch.setattr(output, "prepare", prepare_then_start_another)
    written = generate.run(["--output", location.uri, *SMALL, *location.flags])
    status, err = seconds
    assert status == 2 and err.count("\n") == 1, err
    assert f"output {location.uri} is in use by another run (it holds {storage.join(location.uri, '.lock')}" in err
    storage.configure(location.settings)
    assert read_manifest(location.uri) == written and written.seed == 0
    assert ".lock" not in location.tree()  # released at the end


def test_a_lock_held_by_another_process_refuses_generate_and_is_released_when_it_dies(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from beam_jobs import output\n"
                               "with output.hold(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()", str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert generate.main(["--output", str(out), *SMALL]) == 2
        err = capsys.readouterr().err
        assert err == f"error: output {out} is in use by another run (it holds {out / '.lock'}); wait for it to end\n"
    finally:
        holder.kill()  # dies holding the lock: the kernel releases it
        holder.wait()
    assert generate.main(["--output", str(out), *SMALL]) == 0
    assert sorted(os.listdir(out)) == ["dataset.json", "test", "train", "validation"]


def test_a_stale_s3_lock_is_named_with_what_to_do(s3, capsys):
    s3.client.put_object(Bucket=s3.bucket, Key="out/.lock", Body=b"123\n")
    assert generate.main(["--output", f"s3://{s3.bucket}/out", *SMALL, "--s3_endpoint_url", s3.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"(it holds s3://{s3.bucket}/out/.lock; if no run is writing there, delete that object)" in err
    assert [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"]] == ["out/.lock"]


def test_a_second_train_with_one_checkpoint_dir_is_refused(tmp_path, tiny_dataset, train_args, capsys, monkeypatch):
    """While a training holds its checkpoint dir (here: while it saves its first checkpoint), a second one
    with the same --checkpoint-dir is refused in one line; the first ends normally."""
    from trainer import train

    out = tmp_path / "run"
    real_save, second = checkpoint.save, []

    def save_and_start_another(directory, *args):
        if not second:
            capsys.readouterr()
            second.append(train.main(train_args(tiny_dataset, tmp_path / "other", "--epochs", "1") +
                                     ["--checkpoint-dir", directory]))
            second.append(capsys.readouterr().err)
        real_save(directory, *args)

    monkeypatch.setattr(checkpoint, "save", save_and_start_another)
    assert train.main(train_args(tiny_dataset, out, "--epochs", "1")) == 0
    status, err = second
    assert status == 2 and err == (f"error: checkpoint dir {out}/checkpoints is in use by another run "
                                   f"(it holds {out}/checkpoints/.lock); wait for it to end\n")
    assert sorted(os.listdir(out / "checkpoints")) == ["captcha_spec.json", "training_state.npz"]
    assert not (tmp_path / "other" / "model").exists()


def test_two_writers_of_one_file_never_share_a_temp_file(tmp_path):
    target = tmp_path / "state.npz"
    with localfs.atomic_file(target) as first, localfs.atomic_file(target) as second:
        first.write(b"first")
        second.write(b"second")
        assert len(os.listdir(tmp_path)) == 2  # two temps, nothing under the final name yet
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["state.npz"]


def test_a_lock_is_exclusive_within_one_process_too(tmp_path):
    with localfs.exclusive_lock(str(tmp_path / ".lock"), "folder x"):
        with pytest.raises(UserError, match="folder x is in use by another run"):
            with localfs.exclusive_lock(str(tmp_path / ".lock"), "folder x"):
                pass
    assert os.listdir(tmp_path) == []
