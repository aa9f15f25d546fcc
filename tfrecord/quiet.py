"""Start-up lines that our libraries print below Python's logging, kept off stderr; every other line passes.

TensorFlow's C++ libraries log through Abseil, which writes every line to stderr until
`absl::InitializeLog()` is called, whatever TF_CPP_MIN_LOG_LEVEL says; and Beam's worker processes log
a missing BigQuery client before any code of ours runs in them (beam_jobs/worker_log.py). Both reach
file descriptor 2 directly, so `stderr_without` filters there, line by line, while the noisy step runs.
"""
import contextlib
import os
import re
import sys
import threading

from tfrecord.streams import widen_pipe

ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ABSL_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ :]+:\d+\] ")


def tensorflow_import():
    """Around `import tensorflow`: Abseil's lines below TF_CPP_MIN_LOG_LEVEL (I=0, W=1, E=2, F=3) and its
    preamble kept off stderr; at level 0 (TensorFlow's default) nothing is filtered."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    level = int(level) if level.isdigit() else 0
    if not level:
        return contextlib.nullcontext()

    def below_level(line):
        match = ABSL_LINE.match(line)
        return line.startswith(ABSL_PREAMBLE) or bool(match) and "IWEF".index(match.group(1)) < level

    return stderr_without(below_level)


@contextlib.contextmanager
def stderr_without(drop):
    """Inside the block, lines on file descriptor 2 (this process, its C++ libraries, the processes it starts)
    for which drop(line) is true are not shown. Yields a stream that reaches stderr directly: sys.stderr, or a
    stream on the real file descriptor 2 when sys.stderr writes there (for a live progress bar)."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no stderr at all: nothing to filter
        yield sys.stderr
        return
    read, write = os.pipe()
    widen_pipe(write)  # room for a burst written while the pump waits for the GIL
    os.dup2(write, 2)
    os.close(write)
    pump = threading.Thread(target=_pump, args=(read, os.dup(real), drop), daemon=True)
    pump.start()
    direct = open(os.dup(real), "w") if _writes_to_fd2(sys.stderr) else None
    try:
        yield direct or sys.stderr
    finally:
        if direct:
            direct.close()
        sys.stderr.flush()
        os.dup2(real, 2)
        os.close(real)
        pump.join(timeout=5)  # at the end of what wrote to the pipe; a process still holding it is not waited for


def _writes_to_fd2(stream):
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _pump(read, out, drop):
    with open(read, "rb") as lines, open(out, "wb", buffering=0) as sink:
        for line in lines:
            if not drop(line.decode(errors="replace")):
                sink.write(line)
