"""The login nodes of a root as `status` shows them: who leads and since when (the lease), and each host's
loop and Traefik with the age of its heartbeat (.work/hosts/<host>/host.json, which each loop rewrites).

Readers only. Every field of a host's file is optional and untrusted (another host, another version,
a hand edit wrote it): a value of the wrong type or range is shown as unknown, never believed. A
heartbeat's age (a host's, the lease's) is its file's modification time against this host's clock (the
file server stamps it), never a time another host wrote; how long a leader has led is its own count.
"""

import json
import os
import time

from ..common import fsutil, validate
from ..core import hosts as hosts_mod, lease as lease_mod

GONE = hosts_mod.GONE           # seconds without a heartbeat after which a host counts as gone
ROLES = ("leader", "follower")
MAX_HOSTS = 64                  # shown; a folder full of names is somebody's mistake, not a cluster


def collect(layout, now=None):
    """A JSON-ready view: {"this_host", "first_host", "leader", "lease_problem", "hosts": [...]}."""
    now = time.time() if now is None else now
    leader, problem = _leader(layout, now)
    return {"this_host": layout.host, "first_host": layout.first_host or None, "leader": leader,
            "lease_problem": problem, "hosts": [_host_row(layout, name, now) for name in _host_names(layout)]}


def _leader(layout, now):
    """(what the lease says, or None when no loop has led yet; a problem reading it, or None)."""
    try:
        term = lease_mod.read_current(layout.lease_dir)
    except OSError as exc:
        return None, "%s: %s" % (layout.lease_dir, exc.strerror or exc)
    if term is None:
        return None, None
    described = lease_mod.describe(term, now)
    try:        # the term file is rewritten at every renewal: its age by this host's clock
        described["beat_age"] = max(0.0, now - os.stat(os.path.join(layout.lease_dir, "term-%d" % term.epoch)).st_mtime)
    except OSError:
        pass
    age = described.get("beat_age")
    described["lapsed"] = age is not None and age >= term.lapse
    # The leader's own clock: a duration to show, never compared with anything.
    described["held_seconds"] = max(0.0, term.at - term.since) if term.since and term.at else None
    return described, None


def _host_names(layout):
    try:
        names = os.listdir(layout.hosts_dir)
    except OSError:
        return []
    return sorted(name for name in names if _is_host(name))[:MAX_HOSTS]


def _is_host(name):
    try:
        validate.host_label(name)
        return True
    except validate.Invalid:
        return False


def _host_row(layout, name, now):
    path = os.path.join(layout.hosts_dir, name, "host.json")
    row = {"host": name, "here": name == layout.host, "pid": None, "role": None, "since": None,
           "traefik_port": None, "traefik_ok": None, "heartbeat_seconds_ago": None, "gone": True, "problem": None}
    try:
        modified = os.stat(path).st_mtime
        report = json.loads(fsutil.read_text_file(path, "host file", limit=256 * 1024))
    except FileNotFoundError:
        row["problem"] = "no host.json"
        return row
    except (OSError, ValueError, fsutil.ConfigError) as exc:
        row["problem"] = "unreadable host.json: %s" % exc
        return row
    if not isinstance(report, dict):
        row["problem"] = "host.json is not an object"
        return row
    age = max(0.0, now - modified)
    row.update(heartbeat_seconds_ago=age, gone=age > GONE,
               pid=_whole(report.get("pid"), 1, 2 ** 31),
               role=report.get("role") if report.get("role") in ROLES else None,
               since=_number(report.get("since")),
               traefik_port=_whole(report.get("traefik_port"), 1, 65535),
               traefik_ok=report.get("traefik_ok") if isinstance(report.get("traefik_ok"), bool) else None)
    return row


def _whole(value, low, high):
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else None


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < 1e11 else None


def shown(view):
    """Whether status shows the hosts at all: only where more than one login node runs this root (a
    root on one host looks as it always did)."""
    others = [row for row in view["hosts"] if not row["here"]]
    leader = view.get("leader")
    return bool(others) or bool(leader and leader["host"] != view["this_host"])


def lines(view, duration, paint=lambda text, code: text):
    """The leader line and one row per host, for status's screen; [] where shown() is False."""
    if not shown(view):
        return []
    out = [""] + [_leader_line(view, duration, paint)]
    if view.get("lease_problem"):
        out.append(paint("lease: %s" % view["lease_problem"], "31"))
    rows = [("HOST", "ROLE", "LOOP", "TRAEFIK", "HEARTBEAT")]
    for row in view["hosts"]:
        name = row["host"] + (" (here)" if row["here"] else "")
        if row["problem"]:
            rows.append((name, "?", "-", "-", row["problem"]))
            continue
        role = row["role"] or "?"
        if row["gone"]:
            role = paint("GONE", "31") + (" (was %s)" % row["role"] if row["role"] else "")
        traefik = "-" if row["traefik_port"] is None else ":%d" % row["traefik_port"]
        if row["traefik_ok"] is not None:
            traefik = ("up " if row["traefik_ok"] else "DOWN ") + traefik
        rows.append((name, role, "pid %s" % row["pid"] if row["pid"] else "-", traefik,
                     "%s ago" % duration(row["heartbeat_seconds_ago"])))
    widths = [max(len(_plain(r[i])) for r in rows) for i in range(len(rows[0]))]
    out += ["  ".join(c + " " * (w - len(_plain(c))) for c, w in zip(r, widths)).rstrip() for r in rows]
    return out


def _leader_line(view, duration, paint):
    leader = view.get("leader")
    if leader is None:
        return paint("login nodes: no loop leads yet (no lease in %s)" % "leader/", "33")
    held = " for %s" % duration(leader["held_seconds"]) if leader.get("held_seconds") is not None else ""
    renewed = ("lease renewed %s ago" % duration(leader["beat_age"]) if leader.get("beat_age") is not None
               else "lease never renewed")
    if leader.get("released"):
        return paint("login nodes: %s stopped leading (it released the lease); the next loop takes over"
                     % leader["host"], "33")
    if leader.get("lapsed"):
        return paint("login nodes: %s's lease lapsed (%s): another loop takes over" % (leader["host"], renewed), "31")
    return "login nodes: %s leads%s (pid %s, term %s; %s)" % (leader["host"], held, leader["pid"], leader["epoch"],
                                                               renewed)


def _plain(text):
    """text without colour codes, for the width of a column."""
    while "\033[" in text:
        start = text.index("\033[")
        end = text.find("m", start)
        text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
    return text
