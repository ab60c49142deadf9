"""Traefik's JSON access log: per-service request figures from its tail (for `status`).

`summary` reads the log backwards from its end, a block at a time, and stops at the first line that
finished before the window opened, so a 100 MB log costs what its last few minutes cost; `max_bytes`
bounds the work when the whole tail is recent.  Only the current file is read: right after a rotation
the figures cover less than the window, and `complete` says so.
"""

import calendar
import json
import os
import re
import stat

from ..systems.traefik_logs import READ_MAX, service_of

WINDOW = 300.0
BLOCK = 256 * 1024
# Traefik writes a line when a request ends, so lines are in order of end time, give or take concurrent
# writers; reading on past the first line that ended before the window by this much absorbs that jitter.
ORDER_SLACK = 60.0

_TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*(?:([Zz])|([+-])(\d\d):?(\d\d))?\Z")


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

