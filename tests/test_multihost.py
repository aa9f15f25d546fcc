"""Several hosts of one job on this machine (`launch local --instance-count 2`): trainer processes on
loopback ports, Pipe FIFOs per host, an unequal split of 3 shards; and the failures that must not hang:
a host killed mid-epoch, SIGTERM to the launcher (the spot case, then a restart of all hosts), a
feeder error."""
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from launch import local

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = 120  # tiny_dataset's train split (3 shards)


def job_args(dataset, out, name, *flags, hosts=2, epochs=2, batch=32):
    return [str(dataset), "--output-path", str(out), "--job-name", name, "--instance-count", str(hosts),
            "--hp", f"epochs={epochs}", "--hp", f"batch-size={batch}", "--hp", "scale=1", *flags]


def start(args):
    """`captcha-pipeline launch local ...` in its own process (the tests kill and signal it)."""
    return subprocess.Popen([sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())",
                             "launch", "local", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def read_until(proc, pattern, timeout=120):
    """The launcher's output up to the first line matching `pattern`."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "launcher ended early:\n" + "".join(lines)
        lines.append(line)
        if re.search(pattern, line):
            return "".join(lines)
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "".join(lines))


def processes_using(root):
    """Pids of processes whose environment names `root` (the job's trainers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if root.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def trainer_of(root, host):
    """The pid of `host`'s trainer in the job under `root`."""
    for pid in processes_using(os.path.join(root, host)):
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"SM_CURRENT_HOST={host}\0".encode() in f.read():
                return pid
    raise AssertionError(f"no trainer for {host}")


def steps_per_host(output, batch):
    """{host: steps} from each host's last line; every step trained on a whole global batch."""
    found = re.findall(r"^\[(algo-\d)\] host \1: (\d+) steps, (\d+) examples over all hosts$", output, re.MULTILINE)
    assert all(int(examples) == int(steps) * batch for _, steps, examples in found), found
    return {host: int(steps) for host, steps, _ in found}


@pytest.mark.parametrize("mode", ["Pipe", "File"])
def test_two_hosts_train_one_model(tiny_dataset, tmp_path, capsys, mode):
    """3 shards on 2 hosts (ShardedByS3Key: 2 and 1): the same steps on both, one model, from the chief."""
    root = tmp_path / "root"
    assert local.main(job_args(tiny_dataset, tmp_path / "jobs", "mh", "--input-mode", mode, "--root", str(root))) == 0
    out, err = capsys.readouterr()
    assert steps_per_host(out, 32) == {"algo-1": 2 * (EXAMPLES // 32), "algo-2": 2 * (EXAMPLES // 32)}, out
    metric_lines = [line for line in out.splitlines() if " epoch=" in line]
    assert len(metric_lines) == 2 and all(line.startswith("[algo-1] epoch=") for line in metric_lines), out
    for host, shards in (("algo-1", 2), ("algo-2", 1)):
        config = (root / host / "input/config/resourceconfig.json").read_text()
        assert f'"current_host": "{host}"' in config
        if mode == "File":
            assert len(list((root / host / "input/data/train").iterdir())) == shards
        else:
            assert f"pipe {host} train_0" in err
    with tarfile.open(tmp_path / "jobs/mh/output/model.tar.gz") as tar:
        assert "1/saved_model.pb" in tar.getnames()
    for folder in ("model", "checkpoints", "output/data"):  # the chief's alone
        assert not os.listdir(root / "algo-2" / folder), folder
    assert (root / "algo-1/checkpoints/training_state.npz").exists()


def test_a_killed_host_fails_the_job(tiny_dataset, tmp_path):
    """algo-2's trainer killed mid-epoch: the job fails with that reason first, in seconds, no hang."""
    root = str(tmp_path / "root")
    job = start(job_args(tiny_dataset, tmp_path / "jobs", "kill", "--input-mode", "File", "--root", root,
                         epochs=100, batch=2))
    try:
        read_until(job, r"^\[algo-1\] epoch=1 ")
        os.kill(trainer_of(root, "algo-2"), signal.SIGKILL)
        output = job.communicate(timeout=60)[0]
    finally:
        job.kill()
    assert job.returncode == 128 + signal.SIGKILL, output
    assert not re.search(r"^\[algo-1\] epoch=3 ", output, re.MULTILINE), output  # it stopped in the epoch it was in
    failure = (tmp_path / "jobs/kill/output/failure").read_text().splitlines()
    assert failure[0] == "algo-2: AlgorithmError: ExecuteUserScriptError: ExitCode -9 (SIGKILL)", failure
    assert any(line.startswith("algo-1: lost host algo-2: ") for line in failure), failure  # not only SIGTERM's line
    assert re.search(r"^\[algo-1\] error: lost host algo-2: ", output, re.MULTILINE), output
    assert "error: training job kill failed: algo-2: AlgorithmError" in output
    assert not processes_using(root)


def test_sigterm_saves_a_checkpoint_and_all_hosts_resume(tiny_dataset, tmp_path, capsys):
    """The spot case: SIGTERM to the launcher reaches both trainers, the chief checkpoints, everything
    stops (no orphan, temporary root removed); a restart of both hosts resumes and finishes."""
    from trainer import checkpoint

    checkpoints = tmp_path / "checkpoints"
    args = job_args(tiny_dataset, tmp_path / "jobs", "spot", "--input-mode", "Pipe", "--checkpoint-path",
                    str(checkpoints), epochs=2, batch=4)
    job = start(args)
    try:
        head = read_until(job, r"^\[algo-1\] epoch=1 ")
        job.send_signal(signal.SIGTERM)
        output = head + job.communicate(timeout=60)[0]
    finally:
        job.kill()
    root = re.search(r"root (\S+), Pipe mode", output).group(1)
    assert job.returncode == 128 + signal.SIGTERM, output
    assert "interrupted by SIGTERM" in (tmp_path / "jobs/spot/output/failure").read_text()
    assert not os.path.exists(root) and not processes_using(root)
    saved = checkpoint.load_progress(checkpoints)
    done = saved.epoch * (EXAMPLES // 4) + saved.step
    assert 0 < done < 2 * (EXAMPLES // 4), saved

    resumed = job_args(tiny_dataset, tmp_path / "jobs", "spot-resumed", "--input-mode", "Pipe", "--checkpoint-path",
                       str(checkpoints), epochs=2, batch=4)  # a new job (a job name is used once), same checkpoints
    assert local.main(resumed) == 0
    out = capsys.readouterr().out
    assert "[algo-1] resuming after epoch" in out
    remaining = 2 * (EXAMPLES // 4) - done
    assert steps_per_host(out, 4) == {"algo-1": remaining, "algo-2": remaining}, out
    assert (tmp_path / "jobs/spot-resumed/output/model.tar.gz").exists()


def test_feeder_error_fails_the_job_at_once(tiny_dataset, tmp_path, capsys):
    """`--compression Gzip` on plain shards: the feeder's error is the job's failure, within seconds."""
    rc = local.main(job_args(tiny_dataset, tmp_path / "jobs", "gz", "--input-mode", "Pipe", "--compression", "Gzip",
                             hosts=1))
    assert rc == 1
    reason = "pipe train_0: " + os.path.join(str(tiny_dataset), "train", "train-00000-of-00003.tfrecord") + \
        ": zlib.error: Error -3 while decompressing data: incorrect header check"
    assert (tmp_path / "jobs/gz/output/failure").read_text().splitlines()[0] == reason
    out, err = capsys.readouterr()
    assert err.endswith(f"error: training job gz failed: {reason}\n")
    assert "epoch=" not in out, out  # at once: no epoch was trained on a stream that failed at its first byte


def test_a_launcher_killed_with_sigkill_leaves_no_trainer(tiny_dataset, tmp_path):
    """SIGKILL cannot be caught: both hosts' trainers learn of it from the kernel (SIGTERM at parent death)."""
    root = str(tmp_path / "root")
    job = start(job_args(tiny_dataset, tmp_path / "jobs", "gone", "--input-mode", "Pipe", "--root", root,
                         hosts=2, epochs=50, batch=4))
    try:
        read_until(job, r"^\[algo-1\] epoch=1 ")
        assert trainer_of(root, "algo-1") and trainer_of(root, "algo-2")
        assert len(processes_using(root)) == 2
    finally:
        job.kill()
        job.wait()
    deadline = time.monotonic() + 30
    while processes_using(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = processes_using(root)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


def test_a_host_that_never_joins_ends_the_trainer_after_the_cluster_timeout(tiny_dataset, tmp_path, train_args):
    """Host 0 of two, whose peer never starts: TensorFlow's handshake would wait for ever (GIL held, SIGTERM
    caught); the watch process ends it after --cluster-timeout with one line, also in the failure file."""
    ports = local.free_ports(2)
    output = tmp_path / "output"
    output.mkdir()
    env = {**os.environ, "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-1",
           "CAPTCHA_PIPELINE_WORKERS": json.dumps({f"algo-{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(ports)}),
           "SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DIR": str(output)}
    args = train_args(tiny_dataset, str(tmp_path), "--epochs", "1", "--cluster-timeout", "3")
    done = subprocess.run([sys.executable, "-m", "trainer.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    message = "not all of the hosts algo-1, algo-2 joined within 3 s"
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert f"error: {message}\n" in done.stderr
    assert (output / "failure").read_text() == message + "\n"
    assert not (tmp_path / "model").exists()
