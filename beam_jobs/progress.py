"""generate's progress bar: workers on this machine report what they did, the driver draws it.

Beam's counters reach the driver only when the job has ended on the DirectRunner, and never on the
DaskRunner. So each DoFn instance writes its running totals into a directory the driver made, at
most every REPORT_SECONDS and at the end of each bundle, and the driver sums them. Workers on other
machines do not have that directory and report nothing: their runner's UI shows the Beam counters.
"""
import collections
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

from tfrecord import localfs

REPORT_SECONDS = 0.5


class Reporter:
    """One DoFn instance's running totals (e.g. {"examples": 1280}), written where the driver reads them."""

    def __init__(self, directory):
        here = directory and os.path.isdir(directory)
        self._path = os.path.join(directory, uuid.uuid4().hex) if here else None
        self.totals, self._written = collections.Counter(), 0.0

    def add(self, key, n):
        self.totals[key] += n
        if time.monotonic() - self._written >= REPORT_SECONDS:
            self.flush()

    def flush(self):
        if self._path:
            localfs.write_atomic(self._path, json.dumps(self.totals))
        self._written = time.monotonic()


class ProgressBar:
    """Examples rendered and shards written: a live bar on a terminal, a line per quarter otherwise."""

    def __init__(self, examples, shards, stream=None):
        self.examples, self.shards = examples, shards
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.directory = tempfile.mkdtemp(prefix="captcha-progress-")
        self._stop, self._thread = threading.Event(), threading.Thread(target=self._run, daemon=True)
        self._start, self._quarters, self._drawn, self._width = time.monotonic(), 0, False, 0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._draw(self._totals())
        if self._drawn and self.live:
            self.stream.write("\n")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self):
        while not self._stop.wait(REPORT_SECONDS):
            self._draw(self._totals())

    def _totals(self):
        totals = collections.Counter()
        for name in os.listdir(self.directory):
            if not localfs.TMP_NAME.fullmatch(name):
                try:
                    with open(os.path.join(self.directory, name)) as f:
                        totals.update(json.load(f))
                except (OSError, ValueError):
                    pass  # replaced while we read it: counted at the next look
        return totals

    def _draw(self, totals):
        done = min(totals["examples"], self.examples)  # a retried bundle reports its examples twice
        seconds = time.monotonic() - self._start
        rate = done / seconds if seconds else 0
        if self.live:
            fraction = done / self.examples
            left = f", {duration((self.examples - done) / rate)} left" if 0 < done < self.examples else ""
            line = (f"generate [{'#' * int(20 * fraction):<20}] {fraction:4.0%} {done:,}/{self.examples:,} examples, "
                    f"{rate:,.0f}/s{left}; shards written {min(totals['shards'], self.shards)}/{self.shards}")
            self._width = max(self._width, len(line))
            self.stream.write("\r" + line.ljust(self._width))
        else:
            quarters = 4 * done // self.examples
            if quarters <= self._quarters:
                return
            self._quarters = quarters
            self.stream.write(f"generate: rendered {done:,}/{self.examples:,} examples ({quarters * 25}%) "
                              f"in {duration(seconds)}\n")
        self.stream.flush()
        self._drawn = True


def duration(seconds):
    """Seconds for people: '12 s', '3 min 20 s', '4 h 5 min', '3 d 4 h'."""
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return f"{days} d {h} h" if days else f"{h} h {m} min" if hours else f"{m} min {s} s" if minutes else f"{s} s"
