"""Files written safely: one atomic write, one backup name, one bounded read, private modes.

Everything this tool writes goes through `atomic_write`, so a full disk or a kill never leaves a
half-written file behind (the old one stays until the new one is complete and synced), and every
file it reads from users goes through `read_text_file`, which refuses directories, FIFOs, devices
and absurdly large files instead of blocking on them or reading gigabytes.
"""

import errno
import os
import shutil
import stat
import tempfile
import time

from .errors import ConfigError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
MAX_TEXT_BYTES = 1024 * 1024    # a .env, .sub or .yml larger than this is a mistake, not a config


def atomic_write(path, data, mode=PRIVATE_FILE, tmp_dir=None, only_if_changed=False):
    """Replace `path` with `data` (str, bytes, or a binary file to copy) in one step; True when written.

    The temp file is synced before os.replace, so readers see the old or the new file, never a
    part. tmp_dir (same filesystem) keeps the temp file out of a watched directory. `mode` is set
    explicitly, so the result does not depend on the caller's umask. OSError (full disk,
    read-only folder) propagates after the temp file is removed; the old file is untouched.
    """
    if isinstance(data, str):
        # A path held with surrogate escapes (a root at /tmp/jörg under LC_ALL=C) is written as its bytes.
        data = data.encode("utf-8", "surrogateescape")
    if only_if_changed and not hasattr(data, "read") and _holds(path, data):
        return False
    directory = tmp_dir or os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(data, "read"):
                shutil.copyfileobj(data, handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def create_once(path, data, mode=PRIVATE_FILE):
    """Create `path` holding `data` unless it exists: True when this call made it.

    Exclusive and whole on NFS too (where O_EXCL may not be): the data goes to a synced private temp
    file that is then link(2)ed to path, which fails with EEXIST for everyone but one. When the
    server's answer to a link that was made is lost, the temp file's link count (2) tells the truth
    (open(2)'s recipe for O_EXCL on NFS)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".new",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return os.stat(tmp).st_nlink == 2
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
                raise
        # A filesystem without hard links (some FUSE and SMB mounts): O_EXCL, exclusive on local disks
        # and NFSv3+, then the data (a reader meanwhile sees an empty file, which reads as unreadable).
        try:
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            return False
        with os.fdopen(out, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _holds(path, data):
    try:
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


def backup_name(path, now=None):
    """A free name `path.bak-YYYYmmdd-HHMMSS[-N]` beside path; the one naming scheme for backups."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    candidate = "%s.bak-%s" % (path, stamp)
    number = 2
    while os.path.lexists(candidate):
        candidate = "%s.bak-%s-%d" % (path, stamp, number)
        number += 1
    return candidate


def backup(path, now=None):
    """Copy path to backup_name(path) (atomically, same mode); the backup's path, or None if path is missing."""
    try:
        with open(path, "rb") as handle:
            target = backup_name(path, now)
            atomic_write(target, handle, mode=stat.S_IMODE(os.fstat(handle.fileno()).st_mode))
    except FileNotFoundError:
        return None
    return target


def move_aside(path, into=None, now=None):
    """Rename path to its backup_name (in the directory `into`, made if missing, else beside it): a
    file we must not use or overwrite is kept, never deleted. The new path; None if path is missing."""
    directory = into or os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    target = backup_name(os.path.join(directory, os.path.basename(path)), now)
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return target


def read_text_file(path, what="file", limit=MAX_TEXT_BYTES):
    """The text of a regular file of at most `limit` bytes, decoded leniently (bad bytes become U+FFFD).

    Raises FileNotFoundError when missing (callers decide what absence means) and ConfigError naming
    the path for anything that is not a readable regular text file of sane size.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError("cannot read this %s: %s" % (what, exc.strerror or exc), path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("this %s is not a regular file (%s); refusing to read it"
                              % (what, _kind(info.st_mode)), path)
        if info.st_size > limit:
            raise ConfigError("this %s is %d bytes, more than the %d a %s may have; refusing to read it"
                              % (what, info.st_size, limit, what), path)
        with os.fdopen(fd, "rb") as handle:
            fd = None
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError("cannot read this %s: %s" % (what, exc.strerror or exc), path)
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise ConfigError("this %s is larger than %d bytes; refusing to read it" % (what, limit), path)
    return data.decode("utf-8", "replace")


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def make_private_dir(path):
    """Create path (and parents) and make it 0700 whatever the umask; returns path."""
    os.makedirs(path, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def private_log(path):
    """Make the log file `path` exist and be 0600 before another program writes it: Traefik, systemd's
    `append:` and a shell's `>>` create files by the umask (0644), but keep the mode of one that exists.
    Returns True when the file is private now; a path that is not our regular file is left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE)
    except OSError:
        return False
    try:
        return private_fd(fd)
    finally:
        os.close(fd)


def private_fd(fd):
    """Make the open file fd 0600 when it is a regular file of ours (a log a process writes to); True if so."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return False
        if stat.S_IMODE(info.st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
        return True
    except OSError:
        return False


class Reserve:
    """A file of `size` bytes kept beside our state so that a full disk (or quota) can be survived:
    when a write fails with ENOSPC/EDQUOT the reserve is deleted and the write tried once more, so
    the loop can still record what it submitted and take a gone job out of Traefik. It is made
    again only once the disk has room to spare."""

    FULL = frozenset([errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)])

    def __init__(self, path, size=4 * 1024 * 1024):
        self.path = path
        self.size = size

    def ensure(self):
        """Create the reserve when missing and at least 16 times its size is free; True when present."""
        try:
            if os.path.getsize(self.path) >= self.size:
                return True
        except OSError:
            pass
        try:
            info = os.statvfs(os.path.dirname(self.path) or ".")
            if info.f_bavail * info.f_frsize < 16 * self.size:
                return False
            atomic_write(self.path, b"\0" * self.size)
            return True
        except OSError:
            return False

    def release(self):
        """Delete the reserve; True when there was one to free."""
        try:
            os.unlink(self.path)
            return True
        except OSError:
            return False

    def write(self, write):
        """Call write(); on a full disk release the reserve and call it once more."""
        try:
            return write()
        except OSError as exc:
            if exc.errno not in self.FULL or not self.release():
                raise
        return write()
