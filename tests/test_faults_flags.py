"""Every flag of the wrong kind is one line before any work (tfrecord.flags): each command, through the one
console entry point, refuses it with exactly one `error:` line on stderr and exit status 2, and writes
nothing. The checks run while the flags are parsed, so no dataset, model or training is needed to reach them.
"""
import http.server
import os
import threading

import pytest

from launch.cli import main

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"

# (argv, the one line on stderr). Relative paths are in a scratch folder holding afile (a file), adir (an
# empty folder), full/ (a folder holding a file), fifo (a FIFO) and model/ (an empty folder).
CASES = [
    (["generate", "--output", "out", "-d", "--length", "0"], "error: --length: must be at least 1 (got 0)"),
    (["generate", "--output", "out", "-d", "--num-shards", "0"], "error: --num-shards: must be at least 1 (got 0)"),
    (["generate", "--output", "out", "-d", "--test-examples", "-5"], "error: --test-examples: must be at least 0 (got -5)"),
    (["generate", "--output", "out", "-d", "-n", "0"], "error: --permutations: must be at least 1 (got 0)"),
    (["generate", "--output", "out", "-d", "-n", "1", "-t", "1.5"], "error: --test-ratio: must be in (0, 1] (got 1.5)"),
    (["generate", "--output", "out", "-d", "--height", "-1"], "error: --height: must be at least 1 (got -1)"),
    (["generate", "--output", "out", "-d", "--width", "x"], "error: --width: 'x' is not an integer"),
    (["generate", "--output", "afile", "-d"], "error: --output: afile: is a file, not a folder"),
    (["generate", "--output", "out", "-d", "--font", "fifo"], "error: --font: fifo: is a FIFO, not a regular file"),
    (["generate", "--output", "out", "-d", "--font", "adir"], "error: --font: adir: is a folder, not a regular file"),
    (["generate", "--output", "out", "--chars", "ab\u0301", "--length", "2"],
     "error: font DroidSansMono.ttf draws no ink for '\u0301' on its own (a combining mark?): captcha draws each "
     "character alone; choose characters that stand alone"),
    (["generate", "--output", "out", "-d", "--direct_num_workers", "-1"],
     "error: --direct_num_workers: must be at least 0 (got -1)"),
    (["generate", "--output", "out", "-d", "--num_workers", "two"], "error: --num_workers: invalid int value: 'two'"),
    (["inspect", "adir", "--contact-sheet", "adir"], "error: --contact-sheet: adir: is a folder, not a file"),
    (["inspect", "afile"], "error: dataset: afile: is a file, not a folder"),
    (["inspect", "adir", "--samples", "0"], "error: --samples: must be at least 1 (got 0)"),
    (["train", "--checkpoint-dir", "afile"], "error: --checkpoint-dir: afile: is a file, not a folder"),
    (["train", "--model-dir", "afile"], "error: --model-dir: afile: is a file, not a folder"),
    (["train", "--output-data-dir", "afile/logs"], "error: --output-data-dir: afile/logs: cannot be a folder "
                                                   "({root}/afile is a file)"),
    (["train", "--batch-size", "0"], "error: --batch-size: must be at least 1 (got 0)"),
    (["train", "--learning-rate", "nan"], "error: --learning-rate: must be a finite number (got nan)"),
    (["train", "--warmup-epochs", "-1"], "error: --warmup-epochs: must be at least 0 (got -1)"),
    (["train", "--scale", "0"], "error: --scale: must be in (0, 1] (got 0)"),
    (["train", "--cluster-timeout", "-5"], "error: --cluster-timeout: must be positive (got -5)"),
    (["train", "--shuffle-buffer", "-1"], "error: --shuffle-buffer: must be at least 0 (got -1)"),
    (["train", "--height", "0"], "error: --height: must be at least 1 (got 0)"),
    (["train", "--manifest", "missing.json"], "error: --manifest: missing.json: no such file"),
    (["evaluate", "--model-dir", "model", "--batch-size", "0"], "error: --batch-size: must be at least 1 (got 0)"),
    (["evaluate", "--model-dir", "model", "--num-samples", "-1"], "error: --num-samples: must be at least 0 (got -1)"),
    (["evaluate", "--model-dir", "model", "--gallery-size", "-1"], "error: --gallery-size: must be at least 1 (got -1)"),
    (["evaluate", "--model-dir", "model", "--report", "adir"], "error: --report: adir: is a folder, not a file"),
    (["evaluate", "--model-dir", "model", "--gallery", "fifo"], "error: --gallery: fifo: is a FIFO, not a file"),
    (["evaluate", "--model-dir", "model", "--samples", "afile"], "error: --samples: afile: is a file, not a folder"),
    (["evaluate", "--model-dir", "model", "--report", "x.png", "--gallery", "x.png"],
     "error: --report and --gallery are the same path (x.png)"),
    (["evaluate", "--model-dir", "nowhere"], "error: --model-dir: nowhere: no such folder"),
    (["predict", "x.png", "--model-dir", "model", "--batch-size", "0"], "error: --batch-size: must be at least 1 (got 0)"),
    (["predict", "x.png", "--model-dir", "afile"], "error: --model-dir: afile: is a file, not a folder"),
    (["serve", "model", "--port", "0"], "error: --port: not a TCP port (1-65535) (got 0)"),
    (["serve", "model", "--threads", "0"], "error: --threads: must be at least 1 (got 0)"),
    (["serve", "model", "--max-request-bytes", "-1"], "error: --max-request-bytes: must be at least 1 (got -1)"),
    (["serve", "afile"], "error: model_dir: afile: is a file, not a folder"),
    (["launch", "local", "adir", "--output-path", "jobs", "--root", "afile"], "error: --root: afile: is a file, not a folder"),
    (["launch", "local", "adir", "--output-path", "jobs", "--root", "full"], "error: --root: full: not empty"),
    (["launch", "local", "adir", "--output-path", "jobs", "--checkpoint-path", "afile"],
     "error: --checkpoint-path: afile: is a file, not a folder"),
    (["launch", "local", "adir", "--output-path", "jobs", "--root", "root", "--checkpoint-path", "root/checkpoints"],
     "error: --checkpoint-path root/checkpoints is inside --root root, which this command fills"),
    (["launch", "local", "adir", "--output-path", "afile"], "error: --output-path: afile: is a file, not a folder"),
    (["launch", "local", "adir", "--output-path", "jobs", "--instance-count", "0"],
     "error: --instance-count: must be at least 1 (got 0)"),
    (["launch", "local", "afile", "--output-path", "jobs"], "error: dataset: afile: is a file, not a folder"),
    (["launch", "train", "s3://b/d", "--output-path", "s3://b/o", "--role", ROLE, "--volume-size", "0"],
     "error: --volume-size: must be at least 1 (got 0)"),
    (["launch", "train", "s3://b/d", "--output-path", "s3://b/o", "--role", ROLE, "--max-wait", "-1"],
     "error: --max-wait: must be at least 1 (got -1)"),
    (["launch", "train", "s3://b/d", "--output-path", "s3://b/o", "--role", ROLE, "--checkpoint-s3-uri", "adir"],
     "error: --checkpoint-s3-uri: adir: not an s3://bucket/prefix URI"),
    (["launch", "train", "s3://b/d", "--output-path", "s3://b/o"],
     "error: the following arguments are required: --role (see --help)"),
    (["launch", "deploy", "job", "--role", ROLE, "--instance-count", "0"], "error: --instance-count: must be at least 1 (got 0)"),
    (["launch", "invoke", "endpoint", "fifo"], "error: images: fifo: is a FIFO, not a regular file"),
    (["launch", "invoke", "endpoint", "/dev/zero"], "error: images: /dev/zero: is a device, not a regular file"),
    (["launch", "invoke", "endpoint", "afile", "--url", "ftp://host"], "error: --url: ftp://host: not an http:// or https:// URL"),
    (["launch", "delete"], "error: the following arguments are required: endpoint (see --help)"),
    # numbers whose range makes work or memory explode, or means something silently
    (["generate", "--output", "out", "-d", "--width", "0"], "error: --width: must be at least 1 (got 0)"),
    (["generate", "--output", "out", "-d", "--num-shards", "100000"],
     "error: --num-shards: must be at most 10000 per split (got 100000)"),
    (["generate", "--output", "out", "-d", "--seed", "-5"], "error: --seed: must be at least 0 (got -5)"),
    (["train", "--scale", "1000"], "error: --scale: must be in (0, 1] (got 1000)"),
    (["train", "--seed", "-1"], "error: --seed: must be at least 0 (got -1)"),
    (["evaluate", "--model-dir", "model", "--gallery-size", "0"], "error: --gallery-size: must be at least 1 (got 0)"),
    (["evaluate", "--model-dir", "model", "--gallery-size", "100000"],
     "error: --gallery-size: must be at most 1000 (images on one sheet) (got 100000)"),
    (["inspect", "adir", "--samples", "100000"], "error: --samples: must be at most 1000 (images on one sheet) (got 100000)"),
    (["serve", "model", "--log-interval", "1e20"], "error: --log-interval: must be at most 604800 seconds, a week (got 1e20)"),
    (["train", "--cluster-timeout", "1e300"],
     "error: --cluster-timeout: must be at most 604800 seconds, a week (got 1e300)"),
    (["serve", "model", "--threads", "100000"], "error: --threads: must be at most 1024 (got 100000)"),
    # hyperparameters are the trainer's flags, checked before anything is created or any AWS call
    (["launch", "train", "s3://b/d", "--output-path", "s3://b/o", "--role", ROLE, "--max-run", "99999999"],
     "error: --max-run: must be at most 2419200 seconds (SageMaker's limit, 28 days) (got 99999999)"),
    (["launch", "local", "adir", "--output-path", "jobs", "--hp", "epochs=abc"],
     "error: --hp: --epochs: 'abc' is not an integer"),
    (["launch", "local", "adir", "--output-path", "jobs", "--hp", "scale=1000"],
     "error: --hp: --scale: must be in (0, 1] (got 1000)"),
    (["launch", "local", "adir", "--output-path", "jobs", "--hp", "no-such-flag=1"],
     "error: --hp: unrecognized arguments: --no-such-flag 1 (see --help)"),
    (["launch", "train", "s3://b/d", "--output-path", "s3://b/o", "--role", ROLE, "--hp", "batch-size=0"],
     "error: --hp: --batch-size: must be at least 1 (got 0)"),
    # SageMaker names, checked before any AWS call
    (["launch", "delete", ""], "error: endpoint: '': not a SageMaker name (1 to 63 letters, digits and hyphens, "
                               "starting and ending with a letter or digit)"),
    (["launch", "delete", "../../x"], "error: endpoint: '../../x': not a SageMaker name (1 to 63 letters, digits "
                                      "and hyphens, starting and ending with a letter or digit)"),
    (["launch", "deploy", "a/b", "--role", ROLE], "error: job: 'a/b': not a SageMaker name (1 to 63 letters, digits "
                                                  "and hyphens, starting and ending with a letter or digit)"),
    (["launch", "deploy", "job", "--role", ROLE, "--endpoint-name", "x_y"], "error: --endpoint-name: 'x_y': not a "
     "SageMaker name (1 to 63 letters, digits and hyphens, starting and ending with a letter or digit)"),
]


def tree(folder):
    """Every path under `folder` with its size and modification time."""
    return {os.path.join(d, n): (os.lstat(os.path.join(d, n)).st_size, os.lstat(os.path.join(d, n)).st_mtime_ns)
            for d, dirs, files in os.walk(folder) for n in dirs + files}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SM_"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.mark.parametrize("argv, line", CASES, ids=[" ".join(argv[:2]) + " " + line[7:40] for argv, line in CASES])
def test_a_flag_of_the_wrong_kind_is_one_line_before_any_work(scratch, capsys, argv, line):
    before = tree(scratch)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == line.format(root=scratch) + "\n"
    assert out == ""
    assert tree(scratch) == before


def test_the_cases_cover_every_command():
    from launch.cli import COMMANDS

    assert {" ".join(argv[:2]) if argv[0] == "launch" else argv[0] for argv, _ in CASES} == set(COMMANDS)


@pytest.fixture
def not_xml():
    """An HTTP server on loopback answering every request with 200 and an HTML page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html><body>maintenance</body>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_answer_that_is_not_xml_is_one_line(aws_server, s3, upload, tiny_dataset, not_xml, monkeypatch, capsys):
    """`launch train` whose IAM endpoint answers with an HTML page: botocore's parser error, as one line."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_IAM", not_xml)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "true")  # the SDK asks IAM about the role
    data = upload(tiny_dataset)
    assert main(["launch", "train", data, "--output-path", f"s3://{s3.bucket}/jobs", "--role", ROLE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CreateTrainingJob: unreadable answer from the endpoint (") and err.count("\n") == 1


def test_invoke_url_answers_of_the_wrong_kind_are_one_line(tmp_path, not_xml, free_port, capsys):
    """`launch invoke --url`: nobody listening, or an HTML page where TF Serving's JSON belongs."""
    from PIL import Image

    Image.new("L", (40, 24), 255).save(tmp_path / "a.png")
    port = free_port()
    assert main(["launch", "invoke", "x", str(tmp_path / "a.png"), "--url", f"http://127.0.0.1:{port}"]) == 2
    assert capsys.readouterr().err == f"error: http://127.0.0.1:{port}: no answer (ConnectionError)\n"
    assert main(["launch", "invoke", "x", str(tmp_path / "a.png"), "--url", not_xml]) == 2
    assert capsys.readouterr().err == (f"error: {not_xml}: the answer is not TF Serving's predictions JSON: "
                                       "<html><body>maintenance</body>\n")


def test_sample_file_names_too_long_are_refused_before_evaluating(make_dataset, tmp_path, capsys):
    """evaluate --samples, for labels whose escaped file names exceed the file system's 255 bytes."""
    from tfrecord.manifest import read_manifest
    from trainer import export
    from trainer.model import build_model

    data = make_dataset("--chars", "/_", "--length", "90", "--width", "900", "--height", "20",
                        "--train-examples", "0", "--validation-examples", "0", "--test-examples", "2")
    spec = read_manifest(str(data)).spec
    export.export(build_model(spec, scale=1), spec, str(tmp_path / "model"))
    before = tree(tmp_path)
    argv = ["evaluate", "--model-dir", str(tmp_path / "model"), "--data", f"{data}/test", "--samples",
            str(tmp_path / "samples"), "--report", str(tmp_path / "report.json"), "--gallery", str(tmp_path / "e.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --samples {tmp_path / 'samples'}: file names here would reach 280 bytes")
    assert err.count("\n") == 1 and tree(tmp_path) == before


def test_resuming_with_another_batch_size_is_refused(learnable_dataset, train_args, tmp_path, capsys):
    """A checkpoint records the batch size of its steps; resuming it with another is one line, and the
    checkpoint and the model stay as they are."""
    from trainer import checkpoint, train

    out = str(tmp_path)
    assert train.main(train_args(learnable_dataset, out, "--epochs", "1")) == 0  # 256 examples: 8 steps of 32
    saved = checkpoint.load_progress(tmp_path / "checkpoints")
    assert (saved.epoch, saved.step, saved.batch_size) == (1, 0, 32)
    capsys.readouterr()
    before = tree(tmp_path)
    assert train.main(train_args(learnable_dataset, out, "--epochs", "2", "--batch-size", "64")) == 2
    assert capsys.readouterr().err == (
        f"error: checkpoint dir {out}/checkpoints holds training with --batch-size 32 (1 epochs and 0 steps done): "
        "resume with --batch-size 32, or use an empty checkpoint dir\n")
    assert tree(tmp_path) == before


def test_a_checkpoint_without_its_batch_size_is_refused_past_an_epoch(learnable_dataset, train_args, tmp_path, capsys):
    """A checkpoint written before the batch size was recorded, 35 steps into epoch 4: at --batch-size 128 an
    epoch has 2 steps, so its position cannot be this run's."""
    import json

    import numpy as np

    from tfrecord.manifest import read_manifest
    from trainer import checkpoint, train

    (tmp_path / "checkpoints").mkdir()
    progress = {"epoch": 3, "step": 35, "best": 0.5, "best_epoch": 2, "wait": 0, "stopped": False,
                "dataset": checkpoint.dataset_fingerprint(read_manifest(str(learnable_dataset)))}
    np.savez(tmp_path / "checkpoints" / checkpoint.STATE_FILE, progress=np.array(json.dumps(progress)))
    before = tree(tmp_path)
    assert train.main(train_args(learnable_dataset, str(tmp_path), "--epochs", "5", "--batch-size", "128")) == 2
    assert capsys.readouterr().err == (
        f"error: checkpoint dir {tmp_path}/checkpoints holds step 35 of an epoch, and an epoch at --batch-size 128 "
        "has 2 steps: resume with the batch size it was trained with, or use an empty checkpoint dir\n")
    assert tree(tmp_path) == before
