"""`launch local`: a job that trained to the end always keeps its model.

The job's name, output and hyperparameters are checked, and the name taken, before any trainer starts; a
reader closing its FIFO is the normal end of a stream; a job that exported nothing has failed; outputs that
cannot be uploaded at the end stay on local disk, named in the one error line.

Where only the launcher's bookkeeping is under test, the trainer is a stand-in script run in its place (a
real process, in the job's container root), so no test waits for TensorFlow to train.
"""
import os
import re
import tarfile
import tempfile
import threading

import pytest

from launch import artifacts, local, source
from tfrecord.errors import UserError

pytestmark = pytest.mark.timeout(300)

EXPORTS = "import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'saved_model.pb'), 'w').write('model')\n"


@pytest.fixture
def stand_in(monkeypatch):
    """stand_in(script): the job's trainer is `script` (Python source) in place of trainer.train."""
    original = source.write

    def use(script):
        def write(folder):
            original(folder)
            with open(os.path.join(folder, source.ENTRY_POINT), "w") as f:
                f.write(script)
            return folder
        monkeypatch.setattr(local.source, "write", write)
    return use


def job(dataset, output, name, *flags):
    return local.main([str(dataset), "--output-path", str(output), f"--job-name={name}", "--input-mode", "File",
                       "--hp", "epochs=1", *flags])


def one_error_line(capsys):
    out, err = capsys.readouterr()
    assert "local training job" not in out, "a trainer started"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("name", ["../../escape2", "a/b", "-lead", "trail-", "under_score", "x" * 64, ".."])
def test_a_name_outside_sagemakers_rule_is_refused(tiny_dataset, tmp_path, capsys, name):
    output = tmp_path / "deep" / "er" / "out"
    assert job(tiny_dataset, output, name) == 2
    assert one_error_line(capsys) == (
        f"error: --job-name {name!r}: not a SageMaker job name (1 to 63 letters, digits and hyphens, starting and "
        "ending with a letter or digit: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$)")
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_the_longest_sagemaker_name_is_accepted(tiny_dataset, tmp_path, stand_in, capsys):
    stand_in(EXPORTS)
    name = "a-" + "b" * 61
    assert job(tiny_dataset, tmp_path / "out", name) == 0
    assert (tmp_path / "out" / name / "output" / "model.tar.gz").exists()


@pytest.mark.parametrize("output, message", [
    ("s3://no-such-bucket/out", "output s3://no-such-bucket/out: bucket 'no-such-bucket' is not accessible"),
    ("{file}", "--output-path: {file}: is a file, not a folder"),
    ("{file}/below", "--output-path: {file}/below: cannot be a folder ({file} is a file)"),
    ("/proc/captcha-out", "output /proc/captcha-out"),  # not creatable, even by root
])
def test_every_output_is_checked_before_any_training(tiny_dataset, tmp_path, aws_server, monkeypatch, capsys,
                                                     output, message):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    output = output.format(file=afile)
    assert job(tiny_dataset, output, "bad") == 2
    assert one_error_line(capsys).startswith("error: " + message.format(file=afile))
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("hp", ["model-dir", "model_dir", "--model-dir", "model", "output-data-dir",
                                "output_data_dir", "checkpoint-dir", "checkpoint_dir"])
def test_hyperparameters_that_move_outputs_out_of_the_container_are_refused(tiny_dataset, tmp_path, capsys, hp):
    elsewhere = tmp_path / "elsewhere"
    assert job(tiny_dataset, tmp_path / "out", "moved", f"--hp={hp}={elsewhere}") == 2
    assert re.fullmatch(rf"error: --hp {hp.lstrip('-')}: not settable in a job: .+", one_error_line(capsys))
    assert not elsewhere.exists() and not (tmp_path / "out").exists()


def test_a_job_that_exported_nothing_has_failed(tiny_dataset, tmp_path, stand_in, capsys):
    """A trainer that exits 0 with an empty model dir: the job failed, in one line and a failure file."""
    stand_in("pass\n")
    assert job(tiny_dataset, tmp_path / "out", "empty") == 1
    out, err = capsys.readouterr()
    reason = err.removeprefix("error: training job empty failed: ").rstrip("\n")
    assert reason.startswith("algo-1 exited 0 but exported nothing into its model dir ") and "\n" not in reason
    assert reason.endswith(" (SageMaker uploads that folder as model.tar.gz)")
    outputs = tmp_path / "out" / "empty" / "output"
    assert sorted(p.name for p in outputs.iterdir()) == ["failure", "output.tar.gz"]
    assert (outputs / "failure").read_text() == reason + "\n"


@pytest.mark.parametrize("first", ["completed", "failed"])
def test_a_job_name_is_used_once_per_output(tiny_dataset, tmp_path, stand_in, capsys, first):
    """A second job of a name, after a success or a failure: refused before it starts; the first's outputs
    stay as they were (no stale failure beside a model, no failure beside an old model)."""
    stand_in(EXPORTS if first == "completed" else "raise SystemExit(3)\n")
    assert job(tiny_dataset, tmp_path / "out", "once") == (0 if first == "completed" else 3)
    outputs = tmp_path / "out" / "once" / "output"
    before = {p.name: p.read_bytes() for p in outputs.iterdir()}
    assert set(before) == ({"model.tar.gz", "output.tar.gz"} if first == "completed" else {"failure", "output.tar.gz"})
    capsys.readouterr()
    stand_in(EXPORTS)
    assert job(tiny_dataset, tmp_path / "out", "once") == 2
    assert one_error_line(capsys) == (f"error: training job {tmp_path / 'out' / 'once'} already exists (a job name "
                                      "is used once per output, as in SageMaker): pick another --job-name")
    assert {p.name: p.read_bytes() for p in outputs.iterdir()} == before


@pytest.mark.parametrize("where", ["local", "s3"])
def test_of_jobs_started_at_once_with_one_name_exactly_one_takes_it(tmp_path, request, monkeypatch, where):
    if where == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("aws_server").url)
        s3 = request.getfixturevalue("s3")
        prefix = f"s3://{s3.bucket}/jobs/same"
    else:
        prefix = str(tmp_path / "jobs" / "same")
    start, results = threading.Barrier(8), []

    def take(i):
        start.wait()
        try:
            artifacts.claim(prefix, {"TrainingJobName": "same", "Contender": i})
            results.append(i)
        except UserError as e:
            results.append(str(e))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1 and len(results) == 8
    assert all("already exists" in r for r in results if isinstance(r, str))
    if where == "local":  # the name file is whole and the winner's; no temp file left
        assert sorted(os.listdir(prefix)) == ["job.json"]
        assert f'"Contender": {winners[0]}' in (tmp_path / "jobs" / "same" / "job.json").read_text()


def test_outputs_that_cannot_be_uploaded_stay_on_local_disk(tiny_dataset, tmp_path, aws_server, s3, stand_in,
                                                            monkeypatch, capsys):
    """The output bucket is gone when the job ends: the one error line names the local folder holding the
    model and outputs; nothing else of the temporary root is left."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    stand_in(EXPORTS + "import boto3\nc = boto3.client('s3')\n"
             f"c.delete_object(Bucket={s3.bucket!r}, Key='jobs/gone/job.json')\nc.delete_bucket(Bucket={s3.bucket!r})\n")
    assert job(tiny_dataset, f"s3://{s3.bucket}/jobs", "gone") == 2
    line = one_error_line_after_start(capsys)
    kept = re.fullmatch(rf"error: training job gone completed, but upload to s3://{s3.bucket}/jobs/gone/output "
                        r"failed: .+; the job's outputs are kept in (\S+)", line)
    assert kept, line
    folder = kept.group(1)
    assert sorted(os.listdir(folder)) == ["model.tar.gz", "output.tar.gz"]
    with tarfile.open(os.path.join(folder, "model.tar.gz")) as tar:
        assert tar.extractfile("saved_model.pb").read() == b"model"
    root = os.path.dirname(folder)
    assert os.path.dirname(root) == str(tmp_path / "tmp") and os.listdir(root) == ["artifacts"]


def test_a_failed_job_keeps_the_model_its_chief_exported(tiny_dataset, tmp_path, stand_in, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    stand_in(EXPORTS + "raise SystemExit(5)\n")
    assert job(tiny_dataset, tmp_path / "out", "late") == 5
    line = one_error_line_after_start(capsys)
    kept = re.fullmatch(r"error: training job late failed: AlgorithmError: ExecuteUserScriptError: ExitCode 5; "
                        r"its exported model is kept in (\S+/artifacts/model.tar.gz)", line)
    assert kept, line
    with tarfile.open(kept.group(1)) as tar:
        assert tar.extractfile("saved_model.pb").read() == b"model"
    assert sorted(p.name for p in (tmp_path / "out" / "late" / "output").iterdir()) == ["failure", "output.tar.gz"]


def one_error_line_after_start(capsys):
    out, err = capsys.readouterr()
    assert "local training job" in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_pipe_job_over_many_small_objects_keeps_its_model(make_dataset, tmp_path, capsys):
    """The reported case, smaller: one-record objects, RecordIO, one epoch. When the trainer ends, it closes
    the train FIFO it was reading ahead in, whether the feeder is writing it or not (the feeder's side of
    that is tests/test_faults_feeder.py); the job completes with its model either way."""
    dataset = make_dataset("-d", "--train-examples", "600", "--validation-examples", "64", "--test-examples", "8",
                           "--num-shards", "600", "--image-format", "raw", "--store-size", "60x50")
    rc = local.main([str(dataset), "--output-path", str(tmp_path / "out"), "--job-name", "many",
                     "--input-mode", "Pipe", "--record-wrapper", "RecordIO", "--hp", "epochs=1",
                     "--hp", "batch-size=32"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "BrokenPipeError" not in err and "error" not in err
    with tarfile.open(tmp_path / "out" / "many" / "output" / "model.tar.gz") as tar:
        assert "1/saved_model.pb" in tar.getnames()
    assert sorted(p.name for p in (tmp_path / "out" / "many" / "output").iterdir()) == ["model.tar.gz",
                                                                                          "output.tar.gz"]
