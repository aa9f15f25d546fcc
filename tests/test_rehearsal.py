"""bench/rehearsal.py, tiny: the mission's path (S3 server, generate into S3, inspect, launch local on 2 hosts
in Pipe mode with ShardedByS3Key, evaluate, serve under load) runs end to end and reports every stage."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_tiny_rehearsal_runs_every_stage(tmp_path):
    work = tmp_path / "work"
    argv = ["--npi", "2", "--permutations", "1", "--num-shards", "4", "--instance-count", "2", "--epochs", "1",
            "--batch-size", "16", "--requests", "24", "--clients", "4", "--seed-sample", "8", "--work", str(work)]
    run = subprocess.run([sys.executable, "bench/rehearsal.py", *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    stages = [r["stage"].split(" ")[0] for r in results["rows"]]
    assert stages == ["generate", "inspect", "launch", "evaluate", "serve", "seed:", "seed:"], stages
    generate, inspect, launch, evaluate, serve = results["rows"][:5]
    assert results["examples"] == {"train": 90, "test": 90}
    assert generate["count"] == inspect["count"] == 180 and launch["count"] == 90 and evaluate["count"] == 90
    assert serve["count"] == 24 and results["predictions_right"] <= 24
    assert generate["moved"] >= results["dataset_bytes"] and inspect["moved"] >= results["dataset_bytes"]
    assert "Beam worker" in generate["rss"] and "S3 server" in generate["rss"]
    assert "trainer 2 x" in launch["rss"] and "server" in serve["rss"]
    assert all(r.get("scaled") for r in results["rows"][5:])
    assert results["evaluation"]["examples"] == 90
    assert "| generate -n 1 -> S3, 4 shards/split" in run.stdout and "(scaled)" in run.stdout
    assert "load average before" in run.stdout
