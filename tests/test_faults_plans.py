"""A plan of any size costs the driver the same memory, and a run estimated to take more than a day says so
first (issue 17, "Plans")."""
import re
import subprocess
import sys

from beam_jobs import generate

BUILD_GRAPH = """
import re, sys
import apache_beam as beam
from beam_jobs import generate
from beam_jobs.plan import build_plan

args, options = generate.parse_args(sys.argv[2:])
args.num_shards = int(sys.argv[1])  # set past the flag's bound (MAX_SHARDS): what is measured is the graph's memory
plan = build_plan(args)
pipeline = beam.Pipeline(options=options)
_ = pipeline | generate.WriteDataset(plan, args.output, options, manifest=None)
peak = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024
print(sum(plan.shards.values()), peak)
"""


def graph_peak_mb(tmp_path, examples, shards):
    """(shards, peak RSS in MB) of a process that plans a run and builds its pipeline graph, running nothing."""
    argv = ["--output", str(tmp_path / "out"), "--chars", "ab", "--length", "2", "--width", "40", "--height", "24",
            "--train-examples", str(examples), "--validation-examples", "0", "--test-examples", "0"]
    done = subprocess.run([sys.executable, "-c", BUILD_GRAPH, str(shards), *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    planned, peak = map(int, done.stdout.split())
    return planned, peak


def test_the_drivers_memory_does_not_grow_with_the_number_of_shards(tmp_path):
    small, small_peak = graph_peak_mb(tmp_path, 1000, 4)
    large, large_peak = graph_peak_mb(tmp_path, 10**12, 2_000_000)
    assert (small, large) == (4, 2_000_000)
    # 2 million (split, shard) work items built up front take ~250 MB; ranges of them take nothing to speak of
    assert large_peak - small_peak < 40, (small_peak, large_peak)
    assert not (tmp_path / "out").exists()


def test_a_run_estimated_at_more_than_a_day_prints_its_estimate_first(tmp_path, capsys):
    """The estimate comes before anything else the run does: here the output's foreign file then stops it."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    status = generate.main(["--output", str(tmp_path / "out"), "-d", "--train-examples", str(10**12),
                            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    out, err = capsys.readouterr()
    assert status == 2 and "notes.txt, which is not part of a dataset" in err
    first = out.splitlines()[0]
    assert re.fullmatch(r"generate: estimated \d+ d \d+ h on 2 workers for 1,000,000,002,000 examples \(~[\d.]+ [TP]B "
                        r"in [\d,]+ shards\); --dry-run prints the plan", first), first


def test_a_run_of_less_than_a_day_prints_no_estimate(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert generate.main(["--output", str(tmp_path / "out"), "-d", "--train-examples", "1000"]) == 2
    assert capsys.readouterr().out == ""
