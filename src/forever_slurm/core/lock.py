"""One loop per root: the lock the `run` command holds while it runs, and keeps while its file is deleted.

A scratch purge (or a user cleaning up) may delete .work/forever-slurm.lock under a running loop; a
second loop would then create and lock a new file of the same name and both would run. So the file is
touched now and then (an age-based purge passes it by), and `check()`, called on every pass, makes sure
the path still names the file this loop holds: if it does not, the loop takes the lock back on the
file now there (a new one if none), or stops when another loop holds that one.
"""

import errno
import fcntl
import logging
import os
import time

from ..common.errors import ForeverError, LockedError

log = logging.getLogger(__name__)

TOUCH_EVERY = 3600.0        # seconds between two touches of the lock file


class RootLock:
    """One loop per root: an fcntl lock on .work/forever-slurm.lock holding the owner's pid."""

    def __init__(self, path, clock=time.monotonic, unit="forever-slurm"):
        self.path = path
        self.unit = unit            # the unit that runs the loop, named when another loop holds the lock
        self.fd = None
        self.clock = clock
        self._touched = None

    def acquire(self):
        self.fd = self._take()
        self._touched = self.clock()
        return self

    def check(self):
        """Called on every pass. None while this loop holds the lock on the file the path names; after
        the file was deleted or replaced, the lock is taken on the file now there (a new one if none).
        Raises LockedError when another loop holds that file: this loop must stop."""
        if self.fd is None:
            return
        try:
            mine = os.fstat(self.fd)
            try:
                now_there = os.stat(self.path)
            except FileNotFoundError:
                now_there = None
        except OSError as exc:
            log.debug("cannot look at the lock file %s: %s", self.path, exc)
            return          # cannot tell now (a network filesystem's hiccup): look again next pass
        if now_there is not None and (now_there.st_dev, now_there.st_ino) == (mine.st_dev, mine.st_ino):
            self._touch()
            return
        what = "deleted" if now_there is None else "replaced by another file"
        try:
            fd = self._take()
        except LockedError as exc:
            raise LockedError("this loop's lock file was %s, and another loop (pid %s) holds the new one: "
                              "this loop stops so that only one runs for this root" % (what, exc.holder), self.path)
        except ForeverError as exc:
            log.error("the lock file %s was %s and cannot be made again: %s; retrying next pass", self.path,
                      what, exc.message)
            return
        os.close(self.fd)
        self.fd = fd
        self._touched = self.clock()
        log.warning("the lock file %s was %s (a scratch purge?); this loop took the lock again", self.path, what)

    def _take(self):
        """An fd of the lock file, locked by us, holding our pid; LockedError or ForeverError otherwise."""
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ForeverError("cannot open the lock file: %s; check that .work/ is yours and writable"
                               % (exc.strerror or exc), self.path)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise ForeverError("cannot lock the lock file: %s" % (exc.strerror or exc), self.path)
            error = LockedError("another forever-slurm loop (pid %s) already runs for this root; stop it "
                                "first (e.g. systemctl --user stop %s)" % (holder, self.unit), self.path)
            error.holder = holder
            raise error
        try:
            data = b"%d\n" % os.getpid()
            os.ftruncate(fd, 0)
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            os.close(fd)
            raise ForeverError("cannot write the lock file: %s; free some space (or check that .work/ is "
                               "yours and writable)" % (exc.strerror or exc), self.path)
        return fd

    def _touch(self):
        """Now and then: a file untouched for weeks is what a purge deletes."""
        if self.clock() - self._touched < TOUCH_EVERY:
            return
        self._touched = self.clock()
        try:
            os.utime(self.fd)
        except OSError as exc:
            log.debug("cannot touch the lock file %s: %s", self.path, exc)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"
