"""The one place that starts outside commands: argv lists, an overall deadline on every call, one error type.

The deadline holds whatever the command does, on every Python from 3.6: the command runs in its own
process group, its output is read here with the deadline (not by subprocess.run, which on 3.6 waits
for the pipes to close after a timeout, forever when a wrapper's child keeps them open), and at the
deadline the whole group is killed. A command that has exited while something it started still holds
its pipes is taken at its word after EXIT_GRACE seconds, and that something is killed.
"""

import errno
import logging
import os
import selectors
import signal
import subprocess
import time

from ..common.errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
EXIT_GRACE = 0.5        # after the command exits, how long its output may still take to arrive
_POLL = 0.2             # how often a running command is asked whether it exited (its pipes may stay open)
_CHUNK = 1 << 16
MAX_STDOUT = 256 << 20  # squeue prints ~300 bytes a job: a million jobs; more is a command gone wrong
MAX_STDERR = 1 << 20    # kept from the start; the rest is read and dropped


def run(argv, timeout=DEFAULT_TIMEOUT, env=None, cwd=None, input=None, check=True, errors="replace"):
    """Run argv and return CompletedProcess with str stdout/stderr, within `timeout` seconds in all.

    Output is decoded as UTF-8 with bad bytes replaced (U+FFFD): one odd byte from Slurm must never
    stop the loop, and the locale of a cron job is often ASCII. errors="surrogateescape" keeps the
    bytes instead (a path compared with os.fsencode). Raises CommandError when the command cannot
    start, does not finish within timeout, or (with check) exits non-zero.
    """
    argv = [str(a) for a in argv]
    log.debug("run %s", " ".join(argv))
    deadline = time.monotonic() + timeout
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                 start_new_session=True)
    except OSError as exc:
        raise CommandError(argv, None, str(exc), message="cannot run %s: %s" % (argv[0], exc.strerror or exc))
    outcome = "late"
    try:
        data = None if input is None else input.encode("utf-8", "surrogateescape")     # paths as their bytes
        out, err, outcome = _collect(child, data, deadline)
        if outcome == "done":
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                outcome = "late"        # it closed its output but went on running
    finally:
        _end(child, kill=outcome != "done")
    if outcome == "flood":
        raise CommandError(argv, None, _text(err, errors),
                           message="%s printed more than %d MiB: stopped" % (argv[0], MAX_STDOUT >> 20))
    if outcome == "late":
        raise CommandError(argv, None, _text(err, errors),
                           message="%s did not answer within %ss" % (argv[0], timeout))
    done = subprocess.CompletedProcess(argv, child.returncode, _text(out, errors), _text(err, errors))
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stderr)
    return done


def _collect(child, data, deadline):
    """(stdout bytes, stderr bytes, outcome): read both pipes (and feed data) until they close ("done"),
    the command has exited EXIT_GRACE ago while its pipes are still open ("held"), the deadline
    ("late") or MAX_STDOUT ("flood"); never blocks past the deadline."""
    output = {child.stdout: [], child.stderr: []}
    sizes = {child.stdout: 0, child.stderr: 0}
    limits = {child.stdout: MAX_STDOUT, child.stderr: MAX_STDERR}
    selector = selectors.DefaultSelector()
    try:
        for pipe in output:
            selector.register(pipe, selectors.EVENT_READ)
        if data:
            os.set_blocking(child.stdin.fileno(), False)
            selector.register(child.stdin, selectors.EVENT_WRITE)
        elif child.stdin:
            child.stdin.close()
        exited_at = None
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and child.poll() is not None:
                exited_at = now
            if exited_at is not None and now >= exited_at + EXIT_GRACE:
                log.debug("%s exited, but something it started holds its output open: stopped", child.args[0])
                return _joined(output) + ("held",)
            if now >= deadline:
                return _joined(output) + ("late",)
            wait = min(deadline, exited_at + EXIT_GRACE if exited_at is not None else now + _POLL) - now
            for key, _ in selector.select(wait):
                if key.fileobj is child.stdin:
                    data = _feed(child.stdin, data)
                    if not data:
                        selector.unregister(child.stdin)
                        child.stdin.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                pipe = key.fileobj
                if sizes[pipe] + len(chunk) > limits[pipe]:
                    if pipe is child.stdout:
                        return _joined(output) + ("flood",)
                    chunk = chunk[:max(0, limits[pipe] - sizes[pipe])]
                sizes[pipe] += len(chunk)
                output[pipe].append(chunk)
        return _joined(output) + ("done",)
    finally:
        selector.close()


def _feed(pipe, data):
    """What is left of data after one non-blocking write to pipe (b"" when the reader has gone)."""
    try:
        return data[os.write(pipe.fileno(), data[:_CHUNK]):]
    except BlockingIOError:
        return data
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.EINVAL):
            return b""
        raise


def _joined(output):
    pipes = list(output)
    return b"".join(output[pipes[0]]), b"".join(output[pipes[1]])


def _end(child, kill):
    """With kill, kill the command's process group (all it started that stayed in it); close its pipes
    and reap it. A command that ended by itself (and closed its pipes) keeps what it left running."""
    if kill:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass        # the group is gone already
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe:
            try:
                pipe.close()
            except OSError:
                pass
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) did not end after SIGKILL", child.args[0], child.pid)


def _text(data, errors="replace"):
    if data is None:
        return ""
    if isinstance(data, bytes):
        # universal_newlines semantics, leniently: \r\n and \r become \n.
        return data.decode("utf-8", errors).replace("\r\n", "\n").replace("\r", "\n")
    return data


def child_env(extra=None, drop_prefixes=()):
    """A copy of os.environ without variables that start with drop_prefixes, plus extra."""
    env = {k: v for k, v in os.environ.items() if not any(k.startswith(p) for p in drop_prefixes)}
    env.update(extra or {})
    return env
