"""Quiet output: library start-up lines stay off stderr, every other line (a real error) passes."""
import os
import subprocess
import sys

from beam_jobs import worker_log
from tfrecord import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importing_tensorflow_under_the_trainer_prints_nothing():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the trainer's own default
    proc = subprocess.run([sys.executable, "-c", "import trainer, tensorflow; print(tensorflow.__version__)"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip()
    assert proc.stderr == ""


def test_only_the_known_lines_are_dropped_from_child_processes_too(capfd):
    child = ("import logging, sys; logging.warning(%r); logging.info('x'); logging.error('worker failed: disk full');"
             "sys.stderr.write('a partial line')" % (worker_log.NO_GCP_CLIENT + " x"))
    with quiet.stderr_without(worker_log.start_up_line) as direct:
        subprocess.run([sys.executable, "-c", child], check=True)
        print("generate [####] 20%", file=direct)
        print("a driver line", file=sys.stderr)
    print("after the block", file=sys.stderr)
    err = capfd.readouterr().err
    assert "apitools" not in err
    for line in ("ERROR:root:worker failed: disk full", "a partial line", "generate [####] 20%", "a driver line",
                 "after the block"):
        assert line in err
