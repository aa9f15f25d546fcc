"""Every path a command is told to write is proved, before any work, to be one it can write and owns
(tfrecord.flags): for every command and every output flag, each bad kind of path -- "", a string with a
scheme that is not a valid s3:// location, s3:// where the command writes local disk only, a dangling
link, a link to a file outside, a path inside the dataset read, two outputs on one path or one inside
the other -- is exactly one `error:` line on stderr, exit status 2, and nothing written anywhere. The
refusals come while the flags are read, so the dataset here is a bare layout and no model is trained.
"""
import os

import pytest

from launch.cli import main
from tfrecord import sagemaker

# (command, argv before the output flag, output flag, the output's kind: "folder" or "file", whether it
# may be s3://, the flags that fill the other outputs). Relative paths are in the scratch folder below.
OUTPUTS = [
    ("generate", ["generate", "-d"], "--output", "folder", True),
    ("launch local", ["launch", "local", "ds"], "--output-path", "folder", True),
    ("launch local", ["launch", "local", "ds", "--output-path", "jobs"], "--root", "folder", False),
    ("launch local", ["launch", "local", "ds", "--output-path", "jobs"], "--checkpoint-path", "folder", False),
    ("train", ["train", "--train", "ds/train", "--validation", "ds/validation", "--model-dir", "m"], "--model-dir",
     "folder", False),
    ("train", ["train", "--train", "ds/train", "--model-dir", "m"], "--checkpoint-dir", "folder", False),
    ("train", ["train", "--train", "ds/train", "--model-dir", "m"], "--output-data-dir", "folder", False),
    ("evaluate", ["evaluate", "--model-dir", "model", "--data", "ds/test"], "--report", "file", False),
    ("evaluate", ["evaluate", "--model-dir", "model", "--data", "ds/test"], "--gallery", "file", False),
    ("evaluate", ["evaluate", "--model-dir", "model", "--data", "ds/test"], "--samples", "folder", False),
    ("inspect", ["inspect", "ds"], "--contact-sheet", "file", True),
]

BAD_URIS = ["S3://b/x", "s3:/x", "s3://", "file:///tmp/x", "gs://b/x", "s3://B/x"]


def cases():
    for command, argv, flag, kind, s3 in OUTPUTS:
        where = f"{command} {flag}"
        yield where, argv, flag, "", "an empty string is not a path"
        for uri in BAD_URIS:
            yield where, argv, flag, uri, f"{uri}: not a valid location ("
        if not s3:
            yield where, argv, flag, "s3://b/x", "s3://b/x: a local path is needed here, not s3://"
        yield where, argv, flag, "dangling", "dangling: a symbolic link (to nowhere, dangling);"
        yield where, argv, flag, "victimlink", ("victimlink: a symbolic link (to " if kind == "file" else
                                                "victimlink: is a file, not a folder")
        inside = "ds/test/out.png" if kind == "file" else "ds/train/out"
        if command != "generate":
            yield where, argv, flag, inside, f"{flag} {inside} is inside the dataset read ("
            if kind == "folder" and flag != "--root":  # (a file flag: "is a folder"; --root: "not empty")
                yield where, argv, flag, "ds", f"{flag} ds is inside the dataset read ("


CASES = list(cases())


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder holding a bare dataset layout `ds` (dataset.json and split folders), an empty `model`, a
    dangling link, and `victimlink`, a link to a file outside the scratch folder."""
    (tmp_path / "work" / "ds").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (tmp_path / "work" / "ds" / split).mkdir()
    (tmp_path / "work" / "ds" / "dataset.json").write_text("{}")
    (tmp_path / "work" / "model").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("precious")
    (tmp_path / "work" / "dangling").symlink_to("nowhere")
    (tmp_path / "work" / "victimlink").symlink_to(tmp_path / "outside" / "victim.txt")
    monkeypatch.chdir(tmp_path / "work")
    for name in list(os.environ):
        if name.startswith("SM_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv(sagemaker.ROOT_ENV, raising=False)
    return tmp_path


def tree(folder):
    """Every path under `folder` (links not followed) with its size, modification time and link target."""
    found = {}
    for d, dirs, files in os.walk(folder):
        for n in dirs + files:
            path = os.path.join(d, n)
            st = os.lstat(path)
            found[path] = (st.st_size, st.st_mtime_ns, os.readlink(path) if os.path.islink(path) else None)
    return found


def refused(scratch, capsys, argv, start):
    before = tree(scratch)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: " + start) and err.count("\n") == 1, err
    assert out == ""
    assert tree(scratch) == before


@pytest.mark.parametrize("where, argv, flag, path, start", CASES,
                         ids=[f"{where} {path or 'empty'}" for where, _, _, path, _ in CASES])
def test_an_output_path_of_the_wrong_kind_is_one_line_before_any_work(scratch, capsys, where, argv, flag, path, start):
    argv = [a for a in argv]
    if flag in argv:  # the flag given with a good value in the base argv: replace that value
        i = argv.index(flag)
        argv[i + 1] = path
    else:
        argv += [flag, path]
    if not start.startswith("--"):
        start = f"{flag}: {start}"
    refused(scratch, capsys, argv, start)


SAME = [
    (["train", "--train", "ds/train", "--model-dir", "m", "--checkpoint-dir", "m"],
     "--model-dir and --checkpoint-dir are the same path (m)"),
    (["train", "--train", "ds/train", "--model-dir", "m", "--output-data-dir", "m/logs"],
     "--output-data-dir m/logs is inside --model-dir m, which this command fills"),
    (["train", "--train", "ds/train", "--model-dir", "c/model", "--checkpoint-dir", "c"],
     "--model-dir c/model is inside --checkpoint-dir c, which this command fills"),
    (["evaluate", "--model-dir", "model", "--data", "ds/test", "--samples", "sd", "--report", "sd/r.json"],
     "--report sd/r.json is inside --samples sd, which this command fills"),
    (["evaluate", "--model-dir", "model", "--data", "ds/test", "--report", "r.json", "--gallery", "./r.json"],
     "--report and --gallery are the same path (r.json)"),
    (["launch", "local", "ds", "--output-path", "o", "--checkpoint-path", "o"],
     "--checkpoint-path and --output-path are the same path (o)"),
    (["train", "--train", "ds/train", "--model-dir", "ds/validation/m"],
     "--model-dir ds/validation/m is inside the dataset read ("),
    (["evaluate", "--model-dir", "model", "--data", "ds/test", "--report", "ds/dataset.json"],
     "--report ds/dataset.json is inside the dataset read ("),
    (["train", "--train", "ds/train", "--model-dir", "m", "--manifest", "ds/dataset.json", "--checkpoint-dir",
      "ds/c"], "--checkpoint-dir ds/c is inside the dataset read ("),
]


@pytest.mark.parametrize("argv, start", SAME, ids=[line[:50] for _, line in SAME])
def test_outputs_on_one_path_or_inside_each_other_or_the_data_are_one_line(scratch, capsys, argv, start):
    refused(scratch, capsys, argv, start)


def test_a_link_to_a_folder_outside_is_not_a_way_into_the_data(scratch, capsys):
    """The real path is compared: a link to the dataset named as an output is inside the dataset."""
    os.symlink(scratch / "work" / "ds" / "train", "trainlink")
    refused(scratch, capsys, ["train", "--train", "ds/train", "--model-dir", "trainlink/m"],
            "--model-dir trainlink/m is inside the dataset read (")


def test_every_command_that_writes_is_covered():
    from launch.cli import COMMANDS

    writers = {"generate", "train", "evaluate", "inspect", "launch local"}
    assert writers <= set(COMMANDS)
    assert {command for command, *_ in OUTPUTS} == writers


def test_the_atomic_writer_never_writes_through_or_replaces_a_link(tmp_path):
    from tfrecord import localfs
    from tfrecord.errors import UserError

    (tmp_path / "victim").write_text("precious")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for name in ("link", "dangling"):
        with pytest.raises(UserError, match=f"{name}: a symbolic link"):
            localfs.write_atomic(str(tmp_path / name), b"new")
    assert (tmp_path / "victim").read_text() == "precious" and not (tmp_path / "gone").exists()
    assert sorted(os.listdir(tmp_path)) == ["dangling", "link", "victim"]


def test_outside_a_container_train_needs_a_model_dir_and_resumes_nothing_by_default(scratch, capsys):
    """Without SM_* variables or a container root, the /opt/ml folders are no defaults: --model-dir is
    required, and no checkpoint dir or output data dir is used unless named."""
    from trainer import train

    assert main(["train", "--train", "ds/train"]) == 2
    assert capsys.readouterr().err == "error: the following arguments are required: --model-dir (see --help)\n"
    args = train.parse_args(["--train", "ds/train", "--model-dir", "m"])
    assert (args.checkpoint_dir, args.output_data_dir) == (None, None)


def test_in_a_container_train_keeps_the_opt_ml_defaults(scratch, monkeypatch):
    from trainer import train

    monkeypatch.setenv(sagemaker.ROOT_ENV, str(scratch / "root"))
    args = train.parse_args(["--train", "ds/train"])
    root = str(scratch / "root")
    assert (args.model_dir, args.checkpoint_dir, args.output_data_dir) == (
        f"{root}/model", f"{root}/checkpoints", f"{root}/output/data")


def test_a_run_without_checkpoint_dir_trains_from_scratch_and_leaves_no_checkpoints(tiny_dataset, tmp_path,
                                                                                   monkeypatch, capsys):
    """Outside a container, a run without --checkpoint-dir checkpoints into a temporary folder it removes:
    two runs never share state, and the second trains its epoch again."""
    import tempfile

    from trainer import train

    for name in list(os.environ):
        if name.startswith("SM_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv(sagemaker.ROOT_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    argv = ["--train", f"{tiny_dataset}/train", "--validation", f"{tiny_dataset}/validation", "--epochs", "1",
            "--batch-size", "32", "--scale", "1"]
    for run in ("a", "b"):
        assert train.main(argv + ["--model-dir", str(tmp_path / run)]) == 0
        out = capsys.readouterr().out
        assert "resuming" not in out, out
        assert os.path.exists(tmp_path / run / "1" / "saved_model.pb")
        assert [n for n in os.listdir(tmp_path / "tmp") if n.startswith("captcha-checkpoints-")] == []
