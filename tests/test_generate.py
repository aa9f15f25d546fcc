"""The Beam job on real runners: determinism, label plans, S3 output, atomicity and bad input."""
import collections
import hashlib
import io
import json
import os
import subprocess
import sys
import time

import pytest

from beam_jobs import generate, progress
from tfrecord import schema
from tfrecord.framing import read_records
from tfrecord.manifest import MAX_SHARDS, read_manifest

SMALL = ["--chars", "abc", "--length", "2", "--width", "40", "--height", "24", "--num-shards", "2",
         "--train-examples", "40", "--validation-examples", "8", "--test-examples", "8", "--holdout-labels"]
DASK_SCRIPT = """
import sys
from distributed import Client, LocalCluster
from beam_jobs.generate import main
if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        sys.exit(main(sys.argv[1:] + ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address]))
"""


def tree_hashes(root):
    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for f in files}


def labels_of(root, split):
    manifest = read_manifest(str(root))
    out = []
    for shard in manifest.split(split).shards:
        with open(os.path.join(root, shard.path), "rb") as f:
            for record in read_records(f, shard.path):
                out.append(schema.decode_example(record)[schema.TEXT][0].decode())
    return out


def test_every_runner_writes_identical_bytes(tmp_path, capfd):
    outputs = {name: tmp_path / name for name in ("direct", "multiprocess", "dask")}
    generate.run(["--output", str(outputs["direct"]), *SMALL])
    capfd.readouterr()
    generate.run(["--output", str(outputs["multiprocess"]), *SMALL,
                  "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    err = capfd.readouterr().err  # the workers' stderr too: they are child processes
    assert "generate: rendered 56/56 examples (100%)" in err  # reported by the worker processes
    assert not any(noise in err for noise in ("semi_persistent_directory", "Discarding unparseable args", "apitools",
                                              "Logging handler created"))
    subprocess.run([sys.executable, "-c", DASK_SCRIPT, "--output", str(outputs["dask"]), *SMALL], check=True,
                   cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True)
    hashes = {name: tree_hashes(out) for name, out in outputs.items()}
    assert "dataset.json" in hashes["direct"] and len(hashes["direct"]) == 7  # manifest + 3 splits x 2 shards
    assert hashes["direct"] == hashes["multiprocess"] == hashes["dask"]


def test_holdout_labels_and_manifest(tiny_dataset):
    manifest = read_manifest(str(tiny_dataset))
    assert {s: i.examples for s, i in manifest.splits.items()} == {"train": 120, "validation": 32, "test": 32}
    train = set(labels_of(tiny_dataset, "train"))
    assert not train & set(labels_of(tiny_dataset, "test")) and not train & set(labels_of(tiny_dataset, "validation"))
    for split, info in manifest.splits.items():
        assert sorted(os.listdir(tiny_dataset / split)) == sorted(os.path.basename(s.path) for s in info.shards)
        for shard in info.shards:
            data = (tiny_dataset / shard.path).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (shard.bytes, shard.sha256)


def test_permutations_mode_is_the_seeds_plan(tmp_path):
    generate.run(["--output", str(tmp_path), "--chars", "abc", "--length", "2", "--width", "40", "--height", "24",
                  "-n", "3", "--num-shards", "2"])
    train, test = labels_of(tmp_path, "train"), labels_of(tmp_path, "test")
    arrangements = {"ab", "ac", "ba", "bc", "ca", "cb"}
    assert collections.Counter(train) == {a: 3 for a in arrangements}  # 3 rounds
    assert collections.Counter(test) == {a: 1 for a in arrangements}  # max(1, int(3 * 0.2)) rounds
    assert train[:6] != sorted(train[:6])  # spread out, not in order
    assert sorted(read_manifest(str(tmp_path)).splits) == ["test", "train"]


def test_s3_output_through_a_loopback_server(s3, capsys):
    out = f"s3://{s3.bucket}/captchas"
    generate.run(["--output", out, *SMALL, "--s3_endpoint_url", s3.url])
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket)["Contents"])
    assert keys[0] == "captchas/dataset.json" and len(keys) == 7
    manifest = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="captchas/dataset.json")["Body"].read())
    shard = manifest["splits"]["train"]["shards"][0]
    body = s3.client.get_object(Bucket=s3.bucket, Key=f"captchas/{shard['path']}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == shard["sha256"]
    assert "examples/s" in capsys.readouterr().out
    from launch import inspect_dataset

    assert inspect_dataset.main([out, "--s3_endpoint_url", s3.url]) == 0


def test_rerun_is_idempotent_and_a_different_dataset_needs_overwrite(tmp_path, capsys):
    generate.run(["--output", str(tmp_path), *SMALL])
    before = tree_hashes(tmp_path)
    generate.run(["--output", str(tmp_path), *SMALL])
    assert tree_hashes(tmp_path) == before
    assert generate.main(["--output", str(tmp_path), *SMALL, "--seed", "7"]) == 2
    assert "already holds a different dataset" in capsys.readouterr().err
    assert tree_hashes(tmp_path) == before
    generate.run(["--output", str(tmp_path), *SMALL, "--seed", "7", "--num-shards", "1", "--overwrite"])
    after = tree_hashes(tmp_path)
    assert len(after) == 4 and after != before  # the old 2-shard files are gone


def test_plan_version_is_recorded_and_a_dataset_of_the_old_plans_counts_as_different(tmp_path, capsys):
    generate.run(["--output", str(tmp_path), *SMALL])
    path = tmp_path / "dataset.json"
    manifest = json.loads(path.read_text())
    assert manifest["options"]["plan_version"] == 2
    del manifest["options"]["plan_version"]  # as datasets of plan version 1 were written
    path.write_text(json.dumps(manifest))
    assert "plan_version" not in read_manifest(str(tmp_path)).options  # still readable
    assert generate.main(["--output", str(tmp_path), *SMALL]) == 2
    assert "already holds a different dataset" in capsys.readouterr().err


def test_a_crashed_run_never_looks_finished(tmp_path, monkeypatch):
    from tfrecord import storage

    real_write = storage.write_atomic

    def crash_at_manifest(uri, data):
        if uri.endswith("dataset.json"):
            raise RuntimeError("worker lost")
        real_write(uri, data)

    monkeypatch.setattr(storage, "write_atomic", crash_at_manifest)
    out = tmp_path / "out"
    with pytest.raises(Exception, match="worker lost"):
        generate.run(["--output", str(out), *SMALL])
    monkeypatch.undo()
    assert (out / "train").is_dir() and not (out / "dataset.json").exists()
    assert generate.main(["--output", str(out), *SMALL]) == 2  # shards without a manifest: refuse
    generate.run(["--output", str(out), *SMALL, "--overwrite"])
    assert (out / "dataset.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--length", "2"], "alphabet is empty"),
    (["-d", "--length", "0"], "error: --length: must be at least 1 (got 0)"),
    (["--chars", "ab", "--length", "3", "-n", "1"], "--permutations needs length <= alphabet size"),
    (["-d", "--width", "30"], "too small for 4 characters"),
    (["-d", "--direct-num-workers", "2"], "unknown flag --direct-num-workers"),
    (["-d", "--train-examples", "-1"], "error: --train-examples: must be at least 0 (got -1)"),
    (["-d", "--font", "/nonexistent.ttf"], "error: --font: /nonexistent.ttf: no such file"),
    (["-d", "--font", os.path.abspath(__file__)], "not a font"),
    (["--chars", "ab漢😀", "--length", "2"], "font DroidSansMono.ttf cannot draw '漢😀'"),
    (["-d", "--output", "/etc/hostname/sub"], "error: --output: /etc/hostname/sub: cannot be a folder (/etc/hostname is a file)"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = argv if "--output" in argv else ["--output", str(out), *argv]
    assert generate.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_bucket_is_refused(s3, capsys):
    assert generate.main(["--output", "s3://no-such-bucket/x", "-d", "--s3_endpoint_url", s3.url]) == 2
    err = capsys.readouterr().err
    assert "bucket 'no-such-bucket' is not accessible" in err and err.count("\n") == 1


DRY_RUN = """
import re, sys
from launch.cli import main
code = main(sys.argv[1:])
print("peak_mb", int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024)
sys.exit(code)
"""


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    """Issue 10: -d -l -u --length 5 -n 2 (2.3 billion examples) planned in under 600 MB."""
    out = tmp_path / "out"
    argv = ["generate", "--dry-run", "--output", str(out), "-d", "-l", "-u", "--length", "5", "-n", "2",
            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    done = subprocess.run([sys.executable, "-c", DRY_RUN, *argv], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    assert int(done.stdout.split("peak_mb")[1]) < 600  # the plan is computed, never materialised
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()}
    assert rows["train"][1] == "1,553,040,480" and rows["test"][1] == "776,520,240"
    assert "~time on 2 workers" in done.stdout
    for split in ("train", "test"):
        # shards are sized at most 128 MB for S3 streaming until a split would need more than MAX_SHARDS of them
        # (the manifest lists every shard); this plan needs more, so each split has MAX_SHARDS larger shards
        shards, per_shard = rows[split][2], rows[split][3:5]
        assert shards == f"{MAX_SHARDS:,}" and per_shard[1] == "MB" and float(per_shard[0]) > 128
    assert "nothing written" in done.stdout and not out.exists()


def test_progress_bar_draws_live_on_a_terminal(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with progress.ProgressBar(examples=1000, shards=4, stream=stream) as bar:
        worker = progress.Reporter(bar.directory)
        worker.add("examples", 400)
        worker.flush()
        deadline = time.monotonic() + 10
        while "400/1,000 examples" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "\rgenerate [########            ]  40% 400/1,000 examples" in stream.getvalue()
        worker.add("examples", 600)
        worker.add("shards", 4)
        worker.flush()
    last = stream.getvalue().split("\r")[-1]
    assert "[####################] 100% 1,000/1,000 examples" in last and "shards written 4/4" in last
    assert last.endswith("\n") and not os.path.exists(bar.directory)
