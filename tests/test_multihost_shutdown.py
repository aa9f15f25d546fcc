"""The end of a job on several hosts: hosts that reach the end at different times, and a chief whose
interpreter would take long to shut down, leave in order and print no error line (TensorFlow's
coordination service would otherwise report the first to leave as crashed)."""
import json
import os
import re
import subprocess
import sys

from launch.local import free_ports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATE = 15  # seconds: longer than the coordination service's heartbeat timeout
HOST = """
import atexit, sys, time
from trainer import distribute
cluster = distribute.connect(timeout=300)
if cluster.chief:  # a slow interpreter shutdown (tf.data iterators, open streams) after the job's end
    atexit.register(time.sleep, float(sys.argv[1]))
else:  # reaches the end later
    time.sleep(float(sys.argv[1]))
print(f"{cluster.host} leaving", flush=True)
distribute.leave(cluster)
"""
ERROR_LINE = re.compile(r"^(?:[EF]\d{4} |error:|Traceback)", re.MULTILINE)  # absl's E/F lines, ours, Python's


def test_hosts_that_end_apart_leave_without_an_error_line(tmp_path):
    hosts = ["algo-1", "algo-2"]
    workers = json.dumps({h: f"127.0.0.1:{port}" for h, port in zip(hosts, free_ports(2))})
    procs = []
    for host in hosts:
        env = {**os.environ, "SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": host,
               "CAPTCHA_PIPELINE_WORKERS": workers}
        procs.append(subprocess.Popen([sys.executable, "-c", HOST, str(LATE)], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for host, proc, (out, err) in zip(hosts, procs, outputs):
        assert proc.returncode == 0, (host, out, err)
        assert out == f"{host} leaving\n", (host, out, err)
        assert not ERROR_LINE.search(err), (host, err)
