"""Running a Controller forever: look at Slurm, act, then wait until the next look, probing the
backends meanwhile. When to look next is the plan's to say (planner.service_next_look); this only
keeps two looks at least MIN_LOOK_GAP apart and wakes early when asked."""

import os
import select
import signal
import time

from .planner import MIN_LOOK_GAP

WAKING_PROBE_DELAY = 0.5    # between probe passes while requests are held: they wait for the first ready


def run_forever(controller, should_stop, monotonic=time.monotonic, wait=None):
    """Looks until should_stop(); nothing that happens inside a look or a probe pass ends the loop.
    wait(seconds) pauses between passes (Wakeup.wait: a held request or a signal ends it early)."""
    wait = wait or time.sleep
    while not should_stop():
        started = monotonic()
        controller.guarded(controller.look, "look")
        due = started + max(MIN_LOOK_GAP, _next_look_in(controller))
        while not should_stop():
            remaining = due - monotonic()
            if remaining <= 0:
                break
            wait(_nap(controller, remaining))
            if should_stop() or monotonic() >= due - 0.05:
                break
            controller.guarded(controller.probe_pass, "probe pass")
            # Only ever sooner: a backend that stopped answering, a drain done, a held request.
            due = min(due, max(started + MIN_LOOK_GAP, monotonic() + _next_look_in(controller)))
    controller.guarded(controller.stop, "stopping")


def _next_look_in(controller):
    return controller.guarded(controller.next_look_in, "scheduling", default=controller.settings.sleep_interval)


def _nap(controller, remaining):
    """Seconds to wait before the next probe pass: the probe interval, shorter while requests are
    held (they wait for the first ready backend)."""
    nap = min(controller.settings.probe_interval, remaining)
    if controller.demand.holding():
        nap = min(nap, WAKING_PROBE_DELAY)
    return max(0.0, nap)


class Wakeup:
    """What ends the loop's wait early: a byte on a pipe. The wake proxy's threads call set(); a
    signal writes its number there through signal.set_wakeup_fd, so a handler need only record it
    (as uvicorn's do) and the loop, on its own thread, acts on what was recorded."""

    def __init__(self):
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)

    def set(self):
        try:
            os.write(self._write, b"w")
        except (BlockingIOError, OSError):
            pass            # the pipe is full: the loop wakes anyway

    def wait(self, seconds):
        try:
            select.select([self._read], [], [], max(0.0, seconds))
        except InterruptedError:
            pass
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def catch_signals(self, signals, record):
        """record(signum) on each of `signals`, waking the loop at once."""
        signal.set_wakeup_fd(self._write)
        for signum in signals:
            signal.signal(signum, lambda number, frame: record(number))

    def close(self):
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
