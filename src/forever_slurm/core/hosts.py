"""The login nodes of a root, as each loop reports itself in `.work/hosts/<host>/host.json`: its role
and, for MIN-MAX services, the load it sees (requests in flight through its Traefik, requests its
wake proxy holds, and a count of requests seen), so that the leader scales on the load of every
login node and a request held by a follower's proxy makes the leader submit.

Freshness is judged like the lease: by the reader's own clock, from when a file last changed (a
loop rewrites its file at least every HEARTBEAT seconds), never by comparing clocks of two hosts.
"""

import json
import os
import time
from typing import Dict, NamedTuple

from ..common import fsutil, validate

HEARTBEAT = 15.0    # a loop rewrites its host.json at least this often
MIN_GAP = 5.0       # ... and, for a change of load alone, at most this often
GONE = 60.0         # a host whose file has not changed for this long is gone


class Load(NamedTuple):
    """What one host sees of a MIN-MAX service."""
    in_flight: int = 0      # requests in flight through its Traefik, and held by its wake proxy
    held: int = 0           # of which its wake proxy holds
    seen: int = 0           # requests seen so far (a change means one came since)


class Reporter:
    """Writes this host's file when it changes, and at least every HEARTBEAT seconds."""

    def __init__(self, layout, clock=time.time, monotonic=time.monotonic):
        self.path = layout.host_file
        self.host = layout.host
        self.clock = clock
        self.monotonic = monotonic
        self._last = None
        self._written_at = None

    def report(self, role, since, loads, traefik_port=None, traefik_ok=None):
        """Written now when the role changed or a request began to be held (the leader should submit
        at once), at most every MIN_GAP seconds for a change of load, else every HEARTBEAT seconds."""
        body = {"host": self.host, "pid": os.getpid(), "role": role, "since": since,
                "traefik_port": traefik_port, "traefik_ok": traefik_ok, "load": {name: load._asdict() for name, load in sorted(loads.items())}}
        now = self.monotonic()
        if self._written_at is not None and not self._urgent(body):
            gap = HEARTBEAT if body == self._last else MIN_GAP
            if now - self._written_at < gap:
                return False
        try:
            fsutil.make_private_dir(os.path.dirname(os.path.dirname(self.path)))
            fsutil.make_private_dir(os.path.dirname(self.path))
            fsutil.atomic_write(self.path, json.dumps(dict(body, updated_at=self.clock()), sort_keys=True))
        except OSError:
            return False        # the lease and state.json are the ones that matter; tried again next pass
        self._last, self._written_at = body, now
        return True

    def _urgent(self, body):
        last = self._last or {}
        if body["role"] != last.get("role"):
            return True
        before = last.get("load") or {}
        return any(load["held"] and not (before.get(name) or {}).get("held") for name, load in body["load"].items())


class Others:
    """The other hosts' files, re-read when they change (one stat a host a pass)."""

    def __init__(self, layout, monotonic=time.monotonic):
        self.directory = layout.hosts_dir
        self.host = layout.host
        self.monotonic = monotonic
        self._seen = {}         # host -> (stamp, data, monotonic time it last changed)

    def fresh(self):
        """{host: report dict} of the other hosts whose file changed within GONE seconds."""
        now = self.monotonic()
        found = {}
        try:
            names = os.listdir(self.directory)
        except OSError:
            return {}
        for name in names:
            if name == self.host or not validate.is_service_name(name):
                continue
            path = os.path.join(self.directory, name, "host.json")
            try:
                info = os.stat(path)
            except OSError:
                continue
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            known = self._seen.get(name)
            if known is None or known[0] != stamp:
                known = (stamp, _read(path), now if known is not None else now - GONE / 2)
                self._seen[name] = known
            if known[1] is not None and now - known[2] < GONE:
                found[name] = known[1]
        return found

    def alive(self):
        return bool(self.fresh())

    def loads(self):
        """{service: Load} summed over the other fresh hosts."""
        total = {}
        for report in self.fresh().values():
            for name, value in (report.get("load") or {}).items():
                if isinstance(value, dict):
                    old = total.get(name, Load())
                    total[name] = Load(old.in_flight + _count(value.get("in_flight")),
                                       old.held + _count(value.get("held")), old.seen + _count(value.get("seen")))
        return total


def _read(path):
    try:
        data = json.loads(fsutil.read_text_file(path, "host file", limit=256 * 1024))
    except (OSError, ValueError, fsutil.ConfigError):
        return None
    return data if isinstance(data, dict) else None


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 9 else 0


Loads = Dict[str, Load]
