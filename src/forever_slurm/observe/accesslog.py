"""Traefik's JSON access log: per-service request figures from its tail, and size-based rotation.

`summary` reads the log backwards from its end, a block at a time, and stops at the first line that
finished before the window opened, so a 100 MB log costs what its last few minutes cost; `max_bytes`
bounds the work when the whole tail is recent.  Only the current file is read: right after a rotation
the figures cover less than the window, and `complete` says so.

`rotate_if_large` renames an access log past its size limit and sends Traefik SIGUSR1, on which
Traefik closes and reopens its access log.  Lines Traefik writes between the rename and the signal
land in the renamed file (it still holds the old descriptor), so nothing is lost.  Traefik 3.7 does
NOT reopen its own log (`log.filePath`) on USR1 (tried: it keeps writing to the renamed file); that
one rotates itself with `log.maxSize`/`log.maxBackups`, so do not pass it here.
"""

import calendar
import json
import os
import stat
import re
import signal

WINDOW = 300.0
READ_MAX = 8 * 1024 * 1024
ROTATE_MAX = 20 * 1024 * 1024
BLOCK = 256 * 1024
# Traefik writes a line when a request ends, so lines are in order of end time, give or take concurrent
# writers; reading on past the first line that ended before the window by this much absorbs that jitter.
ORDER_SLACK = 60.0

_TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*(?:([Zz])|([+-])(\d\d):?(\d\d))?$")
_INTERNAL = "@internal"


def parse_time(text):
    """Seconds since the epoch for an RFC 3339 time (nanoseconds, 'Z' or '+hh:mm'); None when unparsable.

    Python 3.6 has no datetime.fromisoformat, and even 3.11's rejects nine fractional digits on some
    versions, so this parses the fields itself.  A time without a zone is taken as UTC (StartUTC is).
    """
    if not isinstance(text, str):
        return None
    match = _TIME_RE.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31 and int(hour) <= 23 and int(minute) <= 59
            and int(second) <= 60):
        return None
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))
    if fraction:
        seconds += int(fraction[:9]) / 10.0 ** len(fraction[:9])
    if sign:
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds -= offset if sign == "+" else -offset
    return float(seconds)


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


def percentile(ordered, fraction):
    """Linear interpolation between closest ranks (numpy's default, statistics.quantiles 'inclusive');
    `ordered` must be sorted; None when empty."""
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(entries, now, window=WINDOW):
    """Figures for parsed log entries (dicts) that started within `window` seconds before `now`.

    Pure: `summary` feeds it the tail of the file.  Returns {"window_seconds", "services": {name:
    {"requests", "share_5xx", "p50_ms", "p95_ms"}}}.
    """
    groups = {}
    for entry, started in _in_window(entries, now, window):
        service = service_of(entry)
        if service is None:
            continue
        group = groups.setdefault(service, [0, 0, []])
        group[0] += 1
        status = entry.get("DownstreamStatus")
        if isinstance(status, int) and status >= 500:
            group[1] += 1
        duration = entry.get("Duration")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration >= 0:
            group[2].append(duration / 1e6)
    services = {}
    for name, (requests, errors, durations) in groups.items():
        durations.sort()
        services[name] = {"requests": requests, "share_5xx": errors / float(requests),
                          "p50_ms": percentile(durations, 0.5), "p95_ms": percentile(durations, 0.95)}
    return {"window_seconds": window, "services": services}


def _in_window(entries, now, window):
    start = now - window
    for entry in entries:
        started = parse_time(entry.get("StartUTC"))
        if started is not None and start <= started <= now:
            yield entry, started


def summary(path, now, window=WINDOW, max_bytes=READ_MAX):
    """Request figures per service over the `window` seconds before `now`, from the tail of the access log
    at `path`; None when there is no log.

    Besides what `summarise` returns: "complete" is False when the file (or the `max_bytes` read) does not
    reach back to the start of the window, e.g. just after a rotation or on a very busy service; then
    "covered_seconds" says how far back the figures reach (it equals window when complete); "skipped"
    counts unparsable lines.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None     # never block on a FIFO or read a device someone put there
        handle = open(path, "rb")
    except OSError:
        return None
    entries = []
    skipped = 0
    complete = False
    cutoff = now - window
    oldest = now
    with handle:
        for raw in _lines_backwards(handle, max_bytes):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                skipped += 1
                continue
            if not isinstance(entry, dict):
                skipped += 1
                continue
            started = parse_time(entry.get("StartUTC"))
            if started is None:
                skipped += 1
                continue
            duration = entry.get("Duration")
            ended = started + (duration / 1e9 if isinstance(duration, (int, float)) and duration > 0 else 0.0)
            oldest = min(oldest, started)
            if started < cutoff:
                complete = True
                if ended < cutoff - ORDER_SLACK:
                    break
                if ended < cutoff:
                    continue
            entries.append(entry)
    result = summarise(entries, now, window)
    result["complete"] = complete
    result["covered_seconds"] = window if complete else max(0.0, min(window, now - oldest))
    result["skipped"] = skipped
    return result


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


def _lines_backwards(handle, max_bytes, block=BLOCK):
    """Complete lines (bytes, no newline) from the end of a binary file backwards, reading at most max_bytes.

    The first line of the range read is dropped unless it starts the file or follows a newline: it is
    part of a line that began before the range.
    """
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    floor = max(0, size - max_bytes)
    first_is_whole = floor == 0
    if floor > 0:
        handle.seek(floor - 1)
        first_is_whole = handle.read(1) == b"\n"
    position = size
    carry = b""
    while position > floor:
        step = min(block, position - floor)
        position -= step
        handle.seek(position)
        lines = (handle.read(step) + carry).split(b"\n")
        carry = lines[0]
        for line in reversed(lines[1:]):
            yield line
    if carry and first_is_whole:
        yield carry


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
