"""Traefik's log files as the loop uses them: the access log's new entries, and its size-based rotation.

`rotate_if_large` renames an access log past its size limit and sends Traefik SIGUSR1, on which
Traefik closes and reopens its access log.  Lines Traefik writes between the rename and the signal
land in the renamed file (it still holds the old descriptor), so nothing is lost.  Traefik 3.7 does
NOT reopen its own log (`log.filePath`) on USR1 (tried: it keeps writing to the renamed file); that
one rotates itself with `log.maxSize`/`log.maxBackups`, so do not pass it here.
"""

import json
import os
import signal
import stat

from ..common import fsutil

READ_MAX = 8 * 1024 * 1024
ROTATE_MAX = 20 * 1024 * 1024
_INTERNAL = "@internal"


def service_of(entry):
    """The forever-slurm service a log entry belongs to: ServiceName, else RouterName, else the path's first
    segment; provider suffixes ('@file') dropped.  None for Traefik's own endpoints (ping, metrics)."""
    name = entry.get("ServiceName")
    router = entry.get("RouterName")
    for value in (name, router):
        if isinstance(value, str) and value.endswith(_INTERNAL):
            return None
    if isinstance(name, str) and name:
        return name.split("@", 1)[0]
    if isinstance(router, str) and router:
        router = router.split("@", 1)[0]
        # The default template names its router '<service>-router'.
        return router[:-len("-router")] if router.endswith("-router") and len(router) > 7 else router
    path = entry.get("RequestPath")
    if isinstance(path, str):
        segment = path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
        if segment:
            return segment
    return "-"


class Follower:
    """The access log's new entries since the last call, as `tail -F` would give them: the loop's
    record that a request came, however short (a probe pass sees only requests still in flight).

    Starts at the end of the file (history is `summary`'s job); a file that is replaced or shrinks
    (rotated) is read again from its start; at most max_bytes a call, the rest on the next one."""

    def __init__(self, path, max_bytes=READ_MAX):
        self.path = path
        self.max_bytes = max_bytes
        self._where = None          # (st_ino, offset) read so far, None before the first call

    def new_entries(self):
        """[entry dict] of the complete lines added since the last call; [] when there is no log."""
        try:
            info = os.stat(self.path)
            if not stat.S_ISREG(info.st_mode):
                return []
            if self._where is None or self._where[0] != info.st_ino or info.st_size < self._where[1]:
                start = info.st_size if self._where is None else 0
                self._where = (info.st_ino, start)
            if info.st_size == self._where[1]:
                return []
            with open(self.path, "rb") as handle:
                handle.seek(self._where[1])
                data = handle.read(self.max_bytes)
        except OSError:
            return []
        complete = data[:data.rfind(b"\n") + 1]
        self._where = (self._where[0], self._where[1] + len(complete))
        entries = []
        for raw in complete.splitlines():
            try:
                entry = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def _read_pid(pid_file):
    try:
        with open(pid_file) as handle:
            pid = int(handle.read().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def _is_traefik(pid, proc):
    """False when /proc shows the pid gone or running something else: a stale pid file must not get a
    signal whose default action would kill an unrelated process of ours.  True when /proc is absent."""
    if proc is None or not os.path.isdir(os.path.join(proc, "self")):
        return True
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            return b"traefik" in handle.read().lower()
    except OSError:
        return False


def rotate_if_large(paths, pid_file, max_bytes=ROTATE_MAX, keep=3, kill=os.kill, proc="/proc"):
    """Rename each log in `paths` larger than max_bytes to '.1' (older ones shift up to '.keep', the
    oldest is dropped), then ask Traefik (pid in pid_file) to reopen its logs.  Returns the rotated paths.

    A missing, unreadable or stale pid file is tolerated: the logs are rotated anyway and Traefik, if it
    runs at all, keeps writing to the renamed file until it is next signalled or restarted.
    """
    keep = max(1, int(keep))
    rotated = []
    try:
        for path in paths:
            try:
                if os.path.getsize(path) <= max_bytes:
                    continue
            except OSError:
                continue
            for index in range(keep - 1, 0, -1):
                older = "%s.%d" % (path, index)
                if os.path.exists(older):
                    os.replace(older, "%s.%d" % (path, index + 1))
            os.replace(path, path + ".1")
            # Traefik makes a missing log by the umask (0644) when it reopens; an empty private one waits.
            fsutil.private_log(path)
            rotated.append(path)
    finally:
        if rotated:
            _reopen(pid_file, kill, proc)
    return rotated


def _reopen(pid_file, kill, proc):
    pid = _read_pid(pid_file)
    if pid is None or not _is_traefik(pid, proc):
        return False
    try:
        kill(pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError):
        return False
    return True
