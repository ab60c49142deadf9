"""The one place that starts outside commands: argv lists, a timeout on every call, one error type."""

import logging
import os
import subprocess

from ..common.errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


def run(argv, timeout=DEFAULT_TIMEOUT, env=None, cwd=None, input=None, check=True):
    """Run argv and return CompletedProcess with str stdout/stderr.

    Output is decoded as UTF-8 with bad bytes replaced (U+FFFD): one odd byte from Slurm must never
    stop the loop, and the locale of a cron job is often ASCII. Raises CommandError when the
    command cannot start, times out, or (with check) exits non-zero.
    """
    argv = [str(a) for a in argv]
    log.debug("run %s", " ".join(argv))
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL if input is None else None,
            input=None if input is None else input.encode("utf-8"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, _text(exc.stderr),
                           message="%s did not answer within %ss" % (argv[0], timeout))
    except OSError as exc:
        raise CommandError(argv, None, str(exc), message="cannot run %s: %s" % (argv[0], exc.strerror or exc))
    done = subprocess.CompletedProcess(done.args, done.returncode, _text(done.stdout), _text(done.stderr))
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stderr)
    return done


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        # universal_newlines semantics, leniently: \r\n and \r become \n.
        return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return data


def child_env(extra=None, drop_prefixes=()):
    """A copy of os.environ without variables that start with drop_prefixes, plus extra."""
    env = {k: v for k, v in os.environ.items() if not any(k.startswith(p) for p in drop_prefixes)}
    env.update(extra or {})
    return env
