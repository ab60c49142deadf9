"""One loop per root: the lock the `run` command holds while it runs."""

import fcntl
import os

from ..common.errors import ForeverError, LockedError


class RootLock:
    """One loop per root: an fcntl lock on .work/forever-slurm.lock holding the owner's pid."""

    def __init__(self, path):
        self.path = path
        self.handle = None

    def acquire(self):
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as exc:
            raise ForeverError("cannot open the lock file: %s; check that .work/ is yours and writable"
                               % (exc.strerror or exc), self.path)
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise LockedError("another forever-slurm loop (pid %s) already runs for this root; stop it "
                              "first (e.g. systemctl --user stop forever-slurm)" % holder, self.path)
        handle.seek(0)
        handle.truncate()
        handle.write("%d\n" % os.getpid())
        handle.flush()
        self.handle = handle
        return self

    def release(self):
        if self.handle:
            self.handle.close()
            self.handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
