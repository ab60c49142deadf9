"""Where log lines go: the console for every command, and a private rotated file for the long-running ones.

No line is ever lost to its encoding: a path with bytes that are not UTF-8 (a root at /tmp/jörg read
under LC_ALL=C, where Python holds them as surrogate escapes) is written as UTF-8 where its bytes are,
and as \\xNN where they are not, on the console and in the file alike.
"""

import logging
import logging.handlers
import os
import re
import sys

from . import fsutil

log = logging.getLogger(__name__)

class _ReadableFormatter(logging.Formatter):
    def format(self, record):
        return readable(super().format(record))


def readable(text):
    """text fit for any UTF-8 output: escaped bytes of a path back to what they were, else \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    text = _NOT_A_BYTE.sub(lambda match: "\\u%04x" % ord(match.group()), text)   # surrogates that stand for no byte
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


FORMAT = _ReadableFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class ConsoleHandler(logging.StreamHandler):
    """sys.stderr as it is when a line is written (it may be replaced), whose encoding may be ASCII
    (cron, LC_ALL=C): what it cannot encode is written \\xNN."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    def emit(self, record):
        try:
            text = self.format(record) + self.terminator
            try:
                self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "ascii"
                self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            self.flush()
        except Exception:   # noqa: as logging does: a console that is gone must not stop the program
            self.handleError(record)
MAX_BYTES = 5 * 1024 * 1024     # per file; with BACKUPS the most a log takes is 20 MiB
BACKUPS = 3


def to_console(verbose):
    """Every log line to stderr (debug detail with verbose): the one handler until to_file adds its own."""
    handler = ConsoleHandler()
    handler.setFormatter(FORMAT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Opens every log file (the first and each one after a rotation) 0600, whatever the umask. A line
    it cannot write (a full disk) is said once on stderr, not with a traceback for every line."""

    _failing = False        # the last line could not be written (said once)
    _failed_now = False

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, fsutil.PRIVATE_FILE)
        os.fchmod(fd, fsutil.PRIVATE_FILE)      # a log left by an older version may be 0644
        return os.fdopen(fd, "a", encoding=self.encoding, errors="backslashreplace")

    def emit(self, record):
        self._failed_now = False
        super().emit(record)            # calls handleError when the line cannot be written
        if not self._failed_now:
            self._failing = False       # it writes again: a later failure is said again

    def handleError(self, record):
        self._failed_now = True
        if self._failing:
            return
        self._failing = True
        error = sys.exc_info()[1]
        try:
            sys.stderr.write("forever-slurm: cannot write %s (%s); its lines go to stderr only until it "
                             "can\n" % (self.baseFilename, getattr(error, "strerror", None) or error))
        except Exception:   # noqa: no stderr either: nothing more to do
            pass


def record_exit(message):
    """The message a command ends with, into the log file as well: its only trace when stderr is gone."""
    record = logging.LogRecord("forever_slurm", logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrivateRotatingFileHandler):
            handler._failing = True     # the message is on stderr already: a failure here is not news
            handler.handle(record)


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
    if not getattr(sys.stderr, "isatty", lambda: False)():
        # Under systemd or cron stderr goes to an unrotated file: keep it to warnings.
        logging.getLogger().handlers[0].setLevel(logging.WARNING)
