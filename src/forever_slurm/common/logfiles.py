"""Where log lines go: the console for every command, and a private rotated file for the long-running ones."""

import logging
import logging.handlers
import os
import sys

from . import fsutil

log = logging.getLogger(__name__)

FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
MAX_BYTES = 5 * 1024 * 1024     # per file; with BACKUPS the most a log takes is 20 MiB
BACKUPS = 3


def to_console(verbose):
    """Every log line to stderr (debug detail with verbose): the one handler until to_file adds its own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMAT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Opens every log file (the first and each one after a rotation) 0600, whatever the umask."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, fsutil.PRIVATE_FILE)
        os.fchmod(fd, fsutil.PRIVATE_FILE)      # a log left by an older version may be 0644
        return os.fdopen(fd, "a", encoding=self.encoding)


def private_std_streams(layout):
    """Make stdout/stderr 0600 when they are log files under .work/log (a unit's or cron's output):
    systemd and the shell create them by the umask, and a deleted one comes back that way."""
    log_dir = os.path.realpath(layout.log)
    for fd in (1, 2):
        try:
            path = os.path.realpath("/proc/self/fd/%d" % fd)
        except OSError:
            continue
        if os.path.dirname(path) == log_dir:
            fsutil.private_fd(fd)


def to_file(layout, name):
    """A rotated log under .work/log, so a long-running loop cannot fill a home directory quota; the
    process's own stdout/stderr there are made private too (private_std_streams)."""
    private_std_streams(layout)
    try:
        fsutil.make_private_dir(layout.log)
        handler = PrivateRotatingFileHandler(os.path.join(layout.log, name), maxBytes=MAX_BYTES,
                                             backupCount=BACKUPS, encoding="utf-8")
    except OSError as exc:
        # The loop must run all the same: its messages then go to stderr (the unit's or cron's log).
        log.warning("cannot write %s (%s); logging to stderr only", os.path.join(layout.log, name),
                    exc.strerror or exc)
        return
    handler.setFormatter(FORMAT)
    logging.getLogger().addHandler(handler)
    if not sys.stderr.isatty():
        # Under systemd or cron stderr goes to an unrotated file: keep it to warnings.
        logging.getLogger().handlers[0].setLevel(logging.WARNING)
