"""SIGTERM during training: SageMaker stopping the job, or a spot interruption.

`StopRequest` turns the signal into an event the training loop checks at every step (it then saves a
checkpoint and exits with INTERRUPTED), and ends the process itself if the loop does not get there in time.
"""
import os
import signal
import threading

from trainer.distribute import fail

INTERRUPTED = 128 + signal.SIGTERM  # exit status after a SIGTERM (checkpoint saved), as a shell reports it
STOP_GRACE = 10  # seconds from SIGTERM to the next step boundary before the trainer exits regardless


class StopRequest:
    """SIGTERM sets an event the training loop checks at every step. A watcher thread sees the signal even
    while the main thread is blocked inside TensorFlow (waiting for input, or for a host that is gone) and
    ends the process if training has not stopped `grace` seconds later, so a SIGTERM always ends the trainer.

    Use: `with StopRequest(STOP_GRACE) as stop_requested:` (a threading.Event)."""

    def __init__(self, grace):
        self.grace, self.event, self.done = grace, threading.Event(), threading.Event()

    def __enter__(self):
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self.previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the watcher acts on it
        self.previous_fd = signal.set_wakeup_fd(write_fd)
        threading.Thread(target=self._watch, daemon=True).start()
        return self.event

    def _watch(self):
        while signal.SIGTERM not in (woken := os.read(self.read_fd, 64)):
            if not woken:  # __exit__ closed the write end: training is over, and no SIGTERM came
                os.close(self.read_fd)
                return
        self.event.set()
        if not self.done.wait(self.grace):
            fail(f"SIGTERM, and training did not reach a step boundary within {self.grace:g} s (blocked on input "
                 "or on another host): exiting without a new checkpoint", INTERRUPTED)
            os._exit(INTERRUPTED)

    def __exit__(self, *exc):
        self.done.set()
        os.close(signal.set_wakeup_fd(self.previous_fd))
        signal.signal(signal.SIGTERM, self.previous)
