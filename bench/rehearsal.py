"""Benchmark: the mission's path at the seed's larger count (`gen_captcha.py -d --npi=4 -n 60`), end to end, here.

1. a loopback S3 server (moto, as the tests use) and a bucket;
2. `generate -d --npi=4 -n N` into s3://rehearsal/captchas: N x 5,040 train and max(1, int(0.2 N)) x 5,040
   test examples, raw 60x50, `--num-shards` per split (default 1,024), 2 Beam workers;
3. `inspect` of the S3 dataset;
4. `launch local` from S3: `--instance-count` hosts (default 2), Pipe mode, ShardedByS3Key, `--epochs`;
5. `evaluate` of the exported model on the test split (downloaded from S3 first, as a File channel would be);
6. `serve` of the model and a bounded load: `--requests` single-image POSTs from `--clients` threads.

One table: per stage the wall time, examples (or requests) per second, the peak RSS of each kind of process
(the driver; Beam workers; the S3 server; the launcher, whose threads are the Pipe agents; trainers; the
server), CPU seconds of every process of the stage plus the S3 server's, and bytes moved through the S3
server (request and response bodies) or over HTTP. Then accuracy, latency p50/p99, and beside it the seed's
way on this machine: its serial `gen_captcha.py` loop and its PIL-per-file loader, timed on a sample and
scaled to the same count (labelled "scaled"). The machine's load average is printed before and after.

    .venv/bin/python bench/rehearsal.py [--permutations 60] [--num-shards 1024] [--instance-count 2] \
        [--epochs 2] [--work bench-output/rehearsal]
    .venv/bin/python bench/rehearsal.py --permutations 1 --num-shards 16 --epochs 1 --requests 50   # smoke
"""
import argparse
import concurrent.futures
import datetime
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

from generate import seed_loop  # noqa: E402  (bench/generate.py: the seed's generator loop)
from input_pipeline import seed_loader  # noqa: E402  (bench/input_pipeline.py: the seed's PIL loader)

from launch.local import free_ports  # noqa: E402
from tfrecord import storage  # noqa: E402
from tfrecord.manifest import MANIFEST_NAME, read_manifest  # noqa: E402
from tfrecord.spec import CaptchaSpec  # noqa: E402

BUCKET = "rehearsal"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
POLL = 0.5  # seconds between samples of the process tree


def command(*args):
    return [sys.executable, "-m", "launch.cli", *args]


def load_average():
    return " ".join(open("/proc/loadavg").read().split()[:3])


class Processes:
    """Samples a process tree (and the S3 server) until stopped: the peak RSS (VmHWM) of each process by kind,
    and the S3 server's CPU time and the bytes of the bodies it received and sent."""

    def __init__(self, root_pid, root_kind, s3):
        self.root_pid, self.root_kind, self.s3_pid, self.s3_url = root_pid, root_kind, s3[0].pid, s3[1]
        self.peaks = {}  # pid -> (kind, peak kB)
        self.s3_start = (s3_cpu(self.s3_pid), *s3_moved(self.s3_url))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        while True:
            self.sample()
            if self.stop.wait(POLL):
                return

    def sample(self):
        children = children_map()
        pids, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo += children.get(pid, [])
        for pid in [*pids, self.s3_pid]:
            peak = status_kb(pid, "VmHWM")
            if peak:
                kind = "S3 server" if pid == self.s3_pid else self.root_kind if pid == self.root_pid else kind_of(pid)
                self.peaks[pid] = (kind, max(peak, self.peaks.get(pid, (kind, 0))[1]))

    def finish(self):
        self.stop.set()
        self.thread.join()
        end = (s3_cpu(self.s3_pid), *s3_moved(self.s3_url))
        return {"s3_cpu": end[0] - self.s3_start[0], "s3_in": end[1] - self.s3_start[1],
                "s3_out": end[2] - self.s3_start[2], "rss": self.rss()}

    def rss(self):
        """'kind: n x peak MB' per kind of process, the largest of each kind."""
        kinds = {}
        for kind, peak in self.peaks.values():
            kinds.setdefault(kind, []).append(peak)
        return "; ".join(f"{kind} {'%d x ' % len(p) if len(p) > 1 else ''}{max(p) / 1024:,.0f} MB"
                         for kind, p in kinds.items())


def children_map():
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(pid))
    return out


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            match = re.search(rf"^{field}:\s*(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def kind_of(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "sagemaker_entry.py" in cmdline:
        return "trainer"
    if "apache_beam" in cmdline or "beam" in cmdline:
        return "Beam worker"
    if "select.select" in cmdline:
        return "trainer's start-up watch"
    return os.path.basename(cmdline.split(" ")[0]) or "other"


def s3_cpu(pid):
    """CPU seconds of the S3 server so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stage:
    """One row of the table: run a command (or a function) under the process sampler."""

    def __init__(self, name, s3, rows):
        self.name, self.s3, self.rows = name, s3, rows

    def run(self, argv, count, unit, kind, env, log, extra_cpu=0.0):
        """Run `argv` to completion (its output to `log`); a row with `count` `unit` done. Returns the output."""
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            watch = Processes(proc.pid, kind, self.s3)
            status = proc.wait()
        seen = watch.finish()
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        text = open(log).read()
        if status:
            raise SystemExit(f"error: stage {self.name} failed (exit {status}); its output is in {log}:\n{text[-3000:]}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime + seen["s3_cpu"] + extra_cpu
        self.rows.append(row(self.name, seconds, count, unit, seen["rss"], cpu, seen["s3_in"] + seen["s3_out"],
                             "through S3"))
        return text


def row(name, seconds, count, unit, rss, cpu, moved, how):
    return {"stage": name, "seconds": seconds, "count": count, "rate": f"{count / seconds:,.0f} {unit}/s", "rss": rss,
            "cpu": cpu, "moved": moved, "bytes": f"{moved / 1e6:,.1f} MB {how}"}


S3_SERVER = """
import json, sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
moto, lock, moved = DomainDispatcherApplication(create_backend_app), threading.Lock(), {"in": 0, "out": 0}
def counting(environ, start_response):  # moto's server, counting the bytes of request and response bodies
    if environ["PATH_INFO"] == "/rehearsal-bytes":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(moved).encode()]
    with lock:
        moved["in"] += int(environ.get("CONTENT_LENGTH") or 0)
    return counted(moto(environ, start_response))
def counted(chunks):
    for chunk in chunks:
        with lock:
            moved["out"] += len(chunk)
        yield chunk
run_simple("127.0.0.1", int(sys.argv[1]), counting, threaded=True, request_handler=MotoRequestHandler)
"""


def start_s3(work):
    """moto's S3 server on a loopback port, counting the bytes it receives and sends: (process, URL)."""
    port = free_ports(1)[0]
    log = open(os.path.join(work, "s3-server.log"), "w")
    proc = subprocess.Popen([sys.executable, "-c", S3_SERVER, str(port)], stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/rehearsal-bytes", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("error: the moto S3 server did not start")
            time.sleep(0.2)


def s3_moved(url):
    """(bytes received, bytes sent) by the S3 server so far, bodies only."""
    with urllib.request.urlopen(f"{url}/rehearsal-bytes", timeout=10) as response:
        moved = json.loads(response.read())
    return moved["in"], moved["out"]


def serve_load(model_dir, images, args, env, log, s3, rows):
    """`serve` in its own process; `--requests` POSTs of one PNG each from `--clients` threads.
    Returns (latencies in seconds, predictions right)."""
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trainer.serve", model_dir, "--port", str(port)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        watch = Processes(proc.pid, "server", s3)
        try:
            wait_for(url, proc, log)
            ready = time.perf_counter()

            def one(i):
                label, body = images[i % len(images)]
                request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "image/png"})
                sent = time.perf_counter()
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = response.read()
                text = json.loads(answer)["predictions"][0]["text"]
                return time.perf_counter() - sent, text == label, len(body) + len(answer)

            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one, range(args.requests)))
            load_seconds = time.perf_counter() - ready
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    seen = watch.finish()
    after, self_after = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
           + self_after.ru_utime + self_after.ru_stime - self_before.ru_utime - self_before.ru_stime)
    rows.append(row(f"serve ({args.requests} requests, {args.clients} clients; start-up "
                    f"{ready - start:.0f} s)", load_seconds, args.requests, "requests",
                    seen["rss"], cpu, sum(r[2] for r in results), "over HTTP"))
    return sorted(r[0] for r in results), sum(r[1] for r in results)


def wait_for(url, proc, log):
    deadline = time.monotonic() + 300
    while True:
        try:
            if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"error: serve did not start; see {log}")
        time.sleep(0.5)


def seed_baseline(args, work, train_examples, test_examples):
    """The seed's generator loop and its PIL loader, timed on `--seed-sample` images and scaled."""
    folder = os.path.join(work, "seed-sample")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    start = time.perf_counter()
    seed_loop(args.seed_sample, folder)
    generate_rate = args.seed_sample / (time.perf_counter() - start)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    spec = CaptchaSpec(alphabet="0123456789", length=4)
    start, n = time.perf_counter(), 0
    for x, _ in seed_loader(files, spec, 2):
        n += len(x)
    load_rate = n / (time.perf_counter() - start)
    shutil.rmtree(folder)
    examples, trained = train_examples + test_examples, args.epochs * train_examples
    return [{"stage": f"seed: gen_captcha.py loop, {examples:,} PNG files (scaled from {args.seed_sample})",
             "seconds": examples / generate_rate, "rate": f"{generate_rate:,.0f} examples/s", "scaled": True},
            {"stage": f"seed: PIL-per-file loader, {args.epochs} x {train_examples:,} (scaled from "
                      f"{args.seed_sample} x 2)", "seconds": trained / load_rate,
             "rate": f"{load_rate:,.0f} images/s", "scaled": True}]


def duration(seconds):
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s" if seconds >= 60 else f"{seconds:.1f} s"


def print_table(rows):
    print(f"| {'stage':<60} | {'wall':>14} | {'rate':>18} | {'CPU s':>8} | {'bytes moved':>22} | peak RSS per process |")
    print(f"|{'-' * 62}|{'-' * 16}|{'-' * 20}|{'-' * 10}|{'-' * 24}|{'-' * 22}|")
    for r in rows:
        wall = duration(r["seconds"]) + (" (scaled)" if r.get("scaled") else "")
        cpu = f"{r['cpu']:,.0f}" if "cpu" in r else "-"
        print(f"| {r['stage']:<60} | {wall:>14} | {r['rate']:>18} | {cpu:>8} | {r.get('bytes', '-'):>22} | "
              f"{r.get('rss', '-')} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--permutations", "-n", type=int, default=60, help="generate -d --npi=4 -n N")
    p.add_argument("--npi", type=int, default=4, help="characters per captcha (the seed's 4; fewer for a quick run)")
    p.add_argument("--num-shards", type=int, default=1024, help="shards per split")
    p.add_argument("--instance-count", type=int, default=2, help="hosts of the launch local job")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size of the training job")
    p.add_argument("--workers", type=int, default=2, help="Beam worker processes")
    p.add_argument("--requests", type=int, default=2000, help="requests sent to serve")
    p.add_argument("--clients", type=int, default=8, help="client threads sending them")
    p.add_argument("--seed-sample", type=int, default=300, help="images the seed's way is timed on")
    p.add_argument("--work", default="bench-output/rehearsal", help="local folder for logs, the model, the test split")
    args = p.parse_args(argv)
    for name in ("permutations", "npi", "num_shards", "instance_count", "epochs", "batch_size", "workers", "requests",
                 "clients", "seed_sample"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    work = os.path.abspath(args.work)
    if os.path.exists(work) and os.listdir(work):
        p.error(f"--work {args.work}: not empty (its logs and model would mix with this run's)")
    os.makedirs(work, exist_ok=True)
    load_before, started = load_average(), datetime.datetime.now(datetime.timezone.utc)
    print(f"rehearsal: {' '.join(sys.argv)}\nstarted {started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; "
          f"load average before {load_before}", flush=True)

    s3, url = start_s3(work)
    env = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": url, "PYTHONPATH": ROOT}
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = url
    rows = []
    try:
        storage.client().create_bucket(Bucket=BUCKET)
        data = f"s3://{BUCKET}/captchas"
        arrangements = math.perm(10, args.npi)  # ordered arrangements of distinct digits
        train_examples = args.permutations * arrangements
        test_examples = max(1, int(args.permutations * 0.2)) * arrangements

        def stage(name):
            print(f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} {name} ...", flush=True)
            return Stage(name, (s3, url), rows)

        stage(f"generate -n {args.permutations} -> S3, {args.num_shards} shards/split").run(
            command("generate", "--output", data, "-d", "--npi", str(args.npi), "--width", "120", "-n", str(args.permutations),
                    "--image-format", "raw", "--store-size", "60x50", "--num-shards", str(args.num_shards),
                    "--s3_endpoint_url", url, "--runner", "DirectRunner", "--direct_running_mode",
                    "multi_processing", "--direct_num_workers", str(args.workers)),
            train_examples + test_examples, "examples", "driver", env, os.path.join(work, "generate.log"))
        manifest = read_manifest(data)
        stage("inspect (S3)").run(command("inspect", data), train_examples + test_examples, "examples", "driver", env,
                                  os.path.join(work, "inspect.log"))
        job = stage(f"launch local: {args.instance_count} hosts, Pipe, ShardedByS3Key, {args.epochs} epochs").run(
            command("launch", "local", data, "--output-path", os.path.join(work, "jobs"), "--job-name", "rehearsal",
                    "--input-mode", "Pipe", "--instance-count", str(args.instance_count),
                    "--hp", f"epochs={args.epochs}", "--hp", f"batch-size={args.batch_size}"),
            args.epochs * train_examples, "images", "launcher + Pipe agents", env, os.path.join(work, "launch.log"))
        model_dir = os.path.join(work, "model")
        with tarfile.open(os.path.join(work, "jobs/rehearsal/output/model.tar.gz")) as tar:
            tar.extractall(model_dir, filter="data")

        download, moved = time.perf_counter(), s3_moved(url)  # the test split to local files, as a File channel
        test_dir = os.path.join(work, "test-data")
        for uri, _ in storage.list(storage.join(data, "test") + "/"):
            target = os.path.join(test_dir, "test", os.path.basename(uri))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(storage.read(uri))
        with open(os.path.join(test_dir, MANIFEST_NAME), "w") as f:
            f.write(manifest.to_json())
        download = time.perf_counter() - download
        samples = os.path.join(work, "samples")
        stage(f"evaluate on the test split ({duration(download)} of it downloading)").run(
            command("evaluate", "--model-dir", model_dir, "--data", os.path.join(test_dir, "test"),
                    "--report", os.path.join(work, "evaluation.json"), "--gallery", os.path.join(work, "errors.png"),
                    "--samples", samples, "--num-samples", "64"),
            test_examples, "examples", "driver", env, os.path.join(work, "evaluate.log"))
        rows[-1]["seconds"] += download
        rows[-1]["moved"] = sum(s3_moved(url)) - sum(moved)
        rows[-1]["bytes"] = f"{rows[-1]['moved'] / 1e6:,.1f} MB through S3"
        report = json.load(open(os.path.join(work, "evaluation.json")))
        images = [(name.split("_")[0], open(os.path.join(samples, name), "rb").read())
                  for name in sorted(os.listdir(samples))]
        print(f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} serve ...", flush=True)
        latencies, right = serve_load(model_dir, images, args, env, os.path.join(work, "serve.log"), (s3, url), rows)
    finally:
        s3.terminate()
        s3.wait()
    seed = seed_baseline(args, work, train_examples, test_examples)
    throughput = re.findall(r"examples_per_sec=([\d.]+)", job)

    print(f"\n`generate -d --npi={args.npi} -n {args.permutations}`: {train_examples:,} train and {test_examples:,} test examples, "
          f"{manifest.spec.describe()}, {args.num_shards} shards per split; {os.cpu_count()} cores\n")
    print_table(rows + seed)
    print(f"\naccuracy on the test split: {report['sequence_accuracy']:.2%} sequence, {report['char_accuracy']:.2%} "
          f"character ({report['examples']:,} examples; its labels are the train split's arrangements, as in the seed)")
    print(f"serve: p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 "
          f"{latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000:.1f} ms per single-image request "
          f"(the first requests included); "
          f"{right} of {len(latencies)} predictions right")
    if throughput:
        print(f"training: {', '.join(f'{float(t):,.0f}' for t in throughput)} images/s per epoch over all hosts "
              "(the chief's examples_per_sec)")
    print(f"generate: {duration(rows[0]['seconds'])} against the seed's serial loop's {duration(seed[0]['seconds'])} "
          f"(scaled): {seed[0]['seconds'] / rows[0]['seconds']:.1f}x faster, into S3 rather than local PNG files")
    load_after = load_average()
    print(f"finished {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average before "
          f"{load_before}, after {load_after}")
    p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"rows": rows + seed, "evaluation": report, "latency_seconds": {"p50": p50, "p99": p99},
                   "predictions_right": right, "dataset_bytes": sum(s.bytes for split in manifest.splits.values()
                                                                    for s in split.shards),
                   "examples": {"train": train_examples, "test": test_examples},
                   "load_average": {"before": load_before, "after": load_after}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
