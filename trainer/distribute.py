"""Where training runs: the hosts, the devices on each, and the collectives between them (TensorFlow backend).

Several SageMaker hosts (SM_HOSTS / resourceconfig.json): `MultiWorkerMirroredStrategy`, host 0 of the
sorted names is the chief; each host listens on `<host>:2222` unless CAPTCHA_PIPELINE_WORKERS maps host
names to `address:port` (`launch local` gives each host its own loopback port). One host with several
GPUs, or with `--cpu-devices N` logical CPU devices: `MirroredStrategy`. Otherwise the default strategy.
"""
import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time

import keras
import tensorflow as tf
from tensorflow.python.eager import context  # the coordination service's key store (no public API for it)

from tfrecord import localfs, sagemaker
from tfrecord.errors import UserError

WORKER_PORT = 2222  # where each host's trainer listens for the others on SageMaker (TF_CONFIG)
LEAVE_TIMEOUT = 30  # seconds the chief waits for the other hosts' servers to close at the end of a job
LEAVE_KEY = "captcha_pipeline/leave"  # set by the chief once the last collective has returned on it
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
               tf.errors.CancelledError)  # what a collective raises when another host has gone


@dataclasses.dataclass
class Cluster:
    strategy: tf.distribute.Strategy
    host: str
    hosts: list

    @property
    def worker(self):
        return self.hosts.index(self.host)

    @property
    def workers(self):
        return len(self.hosts)

    @property
    def chief(self):
        return self.worker == 0

    def describe(self):
        replicas = self.strategy.num_replicas_in_sync
        return f"host {self.host} ({self.worker + 1} of {self.workers}), {replicas} replica(s) in all"


def split_cpu(devices):
    """Present the CPU as `devices` logical devices (before TensorFlow starts), so MirroredStrategy runs on CPU."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def set_precision(mode):
    """`auto`: mixed_float16 when a GPU is present; `on`/`off` force it. Returns True when mixed."""
    mixed = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return mixed


def worker_addresses(hosts):
    """`address:port` where each host's trainer listens for the others: CAPTCHA_PIPELINE_WORKERS
    ({"algo-1": "127.0.0.1:40001", ...}, as `launch local` sets it), else `<host>:2222`."""
    try:
        mapping = json.loads(os.environ.get(sagemaker.WORKERS_ENV) or "{}")
    except ValueError as e:
        raise UserError(f"{sagemaker.WORKERS_ENV}: not JSON ({e})") from None
    if not isinstance(mapping, dict):
        raise UserError(f"{sagemaker.WORKERS_ENV}: expected a JSON object of host name -> address:port")
    return [mapping.get(host, f"{host}:{WORKER_PORT}") for host in hosts]


def connect(*, cpu_devices=0, timeout=900):
    """The Cluster for this process; with several hosts, waits (at most `timeout` s) until all have joined."""
    host, hosts = sagemaker.hosts()
    if host not in hosts:
        raise UserError(f"current host {host!r} is not among the hosts {hosts}")
    if len(hosts) > 1 and cpu_devices > 1:
        raise UserError("--cpu-devices splits one host's CPU; with several hosts each host uses one CPU or its GPUs")
    if cpu_devices > 1:
        split_cpu(cpu_devices)
    if len(hosts) > 1:
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": worker_addresses(hosts)},
                                              "task": {"type": "worker", "index": hosts.index(host)}})
        with deadline(timeout, f"not all of the hosts {', '.join(hosts)} joined within {timeout:g} s"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif cpu_devices > 1 or len(tf.config.list_physical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices(
            "GPU" if tf.config.list_physical_devices("GPU") else "CPU")])
    else:
        strategy = tf.distribute.get_strategy()
    return Cluster(strategy, host, hosts)


class deadline:
    """Kill this process with one line (and the failure reason) if the block does not finish in time.

    For the cluster handshake: TensorFlow holds the GIL while host 0 waits for the others to join, and
    catches SIGTERM from then on, so the watch runs in a small separate process. It waits on a pipe that
    this process closes when the block ends (or when it dies)."""

    WATCH = ("import os, select, signal, sys\n"
             "pid, seconds, message, failure = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]\n"
             "if not select.select([sys.stdin], [], [], seconds)[0]:\n"
             "    print('error: ' + message, file=sys.stderr, flush=True)\n"
             "    if failure:\n"
             "        open(failure, 'w').write(message + '\\n')\n"
             "    os.kill(pid, signal.SIGKILL)\n")

    def __init__(self, seconds, message):
        self.seconds, self.message = seconds, message

    def __enter__(self):
        failure = sagemaker.failure_path() if sagemaker.in_sagemaker() else ""
        self.watch = subprocess.Popen([sys.executable, "-c", self.WATCH, str(os.getpid()), str(self.seconds),
                                       self.message, failure], stdin=subprocess.PIPE)

    def __exit__(self, *exc):
        self.watch.stdin.close()
        self.watch.wait()


class PeerLost(Exception):
    """A collective with the other hosts failed: one of them stopped."""


def peer_lost(error, cluster):
    """A PeerLost for TensorFlow's error from a failed collective: one line naming the other hosts it names."""
    text = getattr(error, "message", str(error))
    named = [cluster.hosts[i] for i in sorted({int(i) for i in re.findall(r"/task:(\d+)", text)})
             if i != cluster.worker and i < cluster.workers]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("Detected", " ", "\t"))]
    reason = next((line for line in lines if "unhealthy" in line or "aborted" in line.lower()), lines[0] if lines else "")
    who = f"host {', '.join(named)}" if named else "another host"
    return PeerLost(f"lost {who}: {type(error).__name__}: {reason}")


def write_failure(message):
    """In a SageMaker container, the job's failure reason (`/opt/ml/output/failure`), as SageMaker reports it."""
    if sagemaker.in_sagemaker():
        with contextlib.suppress(localfs.NoSpace):  # on a full disk the error line still says why
            localfs.write_atomic(sagemaker.failure_path(), message + "\n")


def fail(message, status):
    """One `error:` line on stderr and the job's failure reason; returns `status` (the exit status)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    write_failure(message)
    return status


def step_function(model, strategy):
    """One training step on every replica (the compiled model's own train_step: loss, gradients all-reduced
    by the optimizer, metrics). Returns [replicas asked to stop (SIGTERM), examples trained on], summed
    over all hosts, so every host takes the same decision."""
    @tf.function
    def step(iterator, stop):
        def replica_step(data, stop):
            model.train_step(data)
            counts = tf.stack([tf.identity(stop), tf.cast(tf.shape(data[0])[0], tf.float32)])
            return tf.distribute.get_replica_context().all_reduce("sum", counts)
        return strategy.experimental_local_results(strategy.run(replica_step, args=(next(iterator), stop)))[0]
    return step


def statistics_function(model, strategy):
    """Average BatchNorm's moving statistics over all replicas (each host updates its own from its own
    batches), so that every host validates, and the chief exports, the same model."""
    stats = [w for w in model.non_trainable_weights if "float" in str(w.dtype)]

    @tf.function
    def average():
        def replica_average():
            means = tf.distribute.get_replica_context().all_reduce("mean", [tf.identity(w.value) for w in stats])
            for variable, mean in zip(stats, means):
                variable.assign(mean)
        strategy.run(replica_average)
    return average


def sum_function(strategy):
    """A function: a float tensor -> its sum over every replica of every host (a collective: every host calls it)."""
    @tf.function
    def total(value):
        return strategy.experimental_local_results(strategy.run(
            lambda v: tf.distribute.get_replica_context().all_reduce("sum", tf.identity(v)), args=(value,)))[0]
    return total


def leave(cluster, status=0):
    """End this host's process at the end of a successful job, in an order that prints no error. Never returns.

    TensorFlow's coordination service runs in the chief and takes a host that stops sending heartbeats for
    a crashed one (`StartAbort UNAVAILABLE ... The tasks have crashed` on the hosts still up), and a host
    that outlives the chief fails its next heartbeat; TensorFlow offers no call that takes a host out of
    the cluster cleanly (its agent shuts down only in a C++ destructor that Python's exit does not run).
    So: every host waits at a last collective (the chief has exported by then); the other hosts exit once
    the chief's collective has returned too; the chief waits until their servers have closed (at most LEAVE_TIMEOUT s), then exits at once,
    taking the service with it. A host that dies earlier still fails the others (`lost host ...`)."""
    if cluster.workers > 1:
        sum_function(cluster.strategy)(tf.zeros([]))
        # A host's collective can return while a peer still fetches this host's last buffer from it, so the
        # others go only once the chief's collective has returned too (the coordination service's key store).
        coordination = context.context()
        with contextlib.suppress(Exception):  # the chief gone: nothing is left to wait for
            if cluster.chief:
                coordination.set_config_key_value(LEAVE_KEY, "done")
            else:
                coordination.get_config_key_value(LEAVE_KEY, timeout_in_ms=int(LEAVE_TIMEOUT * 1000))
    sys.stdout.flush()
    sys.stderr.flush()
    if cluster.chief:
        others = [a for i, a in enumerate(worker_addresses(cluster.hosts)) if i != cluster.worker]
        deadline = time.monotonic() + LEAVE_TIMEOUT
        while any(map(_listening, others)) and time.monotonic() < deadline:
            time.sleep(0.05)
    os._exit(status)


def _listening(address):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False
