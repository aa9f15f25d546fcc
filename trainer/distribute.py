"""Where training runs: the hosts, the devices on each, and the collectives between them (TensorFlow backend).

Several SageMaker hosts (SM_HOSTS / resourceconfig.json): `MultiWorkerMirroredStrategy`, host 0 of the
sorted names is the chief; each host listens on `<host>:2222` unless CAPTCHA_PIPELINE_WORKERS maps host
names to `address:port` (`launch local` gives each host its own loopback port). One host with several
GPUs, or with `--cpu-devices N` logical CPU devices: `MirroredStrategy`. Otherwise the default strategy.
"""
import dataclasses
import json
import os
import sys
import threading

import keras
import tensorflow as tf

from tfrecord import sagemaker
from tfrecord.errors import UserError

WORKER_PORT = 2222
WORKERS_ENV = "CAPTCHA_PIPELINE_WORKERS"


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


def worker_addresses(hosts):
    """`address:port` per host: CAPTCHA_PIPELINE_WORKERS ({"algo-1": "127.0.0.1:40001", ...}), else `<host>:2222`."""
    try:
        mapping = json.loads(os.environ.get(WORKERS_ENV) or "{}")
    except ValueError as e:
        raise UserError(f"{WORKERS_ENV}: not JSON ({e})") from None
    if not isinstance(mapping, dict):
        raise UserError(f"{WORKERS_ENV}: expected a JSON object of host name -> address:port")
    return [mapping.get(host, f"{host}:{WORKER_PORT}") for host in hosts]


def split_cpu(devices):
    """Present the CPU as `devices` logical devices (before TensorFlow starts), so MirroredStrategy runs on CPU."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def set_precision(mode):
    """`auto`: mixed_float16 when a GPU is present; `on`/`off` force it. Returns True when mixed."""
    mixed = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return mixed


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
    """Exit the process with one line if the block does not finish in time (a peer that never comes up
    would otherwise keep the cluster handshake waiting)."""

    def __init__(self, seconds, message):
        self.timer = threading.Timer(seconds, self._expire, args=(message,))
        self.timer.daemon = True

    @staticmethod
    def _expire(message):
        print(f"error: {message}", file=sys.stderr, flush=True)
        write_failure(message)
        os._exit(1)

    def __enter__(self):
        self.timer.start()

    def __exit__(self, *exc):
        self.timer.cancel()


def write_failure(message):
    """In a SageMaker container, the job's failure reason (`/opt/ml/output/failure`), as SageMaker reports it."""
    if sagemaker.in_sagemaker():
        os.makedirs(sagemaker.output_dir(), exist_ok=True)
        with open(sagemaker.failure_path(), "w") as f:
            f.write(message + "\n")


def sum_function(strategy):
    """A function: a float tensor -> its sum over every replica of every host (a collective: every host calls it)."""
    @tf.function
    def total(value):
        return strategy.experimental_local_results(strategy.run(
            lambda v: tf.distribute.get_replica_context().all_reduce("sum", tf.identity(v)), args=(value,)))[0]
    return total
