"""The login nodes of a root, as each loop reports itself in `.work/hosts/<host>/host.json`: its role
and, for MIN-MAX services, the load it sees (requests in flight through its Traefik, requests its
wake proxy holds, and a count of requests seen), so that the leader scales on the load of every
login node and a request held by a follower's proxy makes the leader submit.

Freshness is judged like the lease: by the reader's own clock, from when a file last changed (a
loop rewrites its file at least every HEARTBEAT seconds), never by comparing clocks of two hosts.
"""

import json
import os
import socket
import time
from typing import Dict, NamedTuple

from ..common import fsutil, validate

HEARTBEAT = 15.0    # a loop rewrites its host.json at least this often
GONE = 60.0         # a host whose file has not changed for this long is gone


def this_host(environ=None):
    """FOREVER_HOST (tests run two login nodes on one machine), else the short host name."""
    environ = os.environ if environ is None else environ
    name = environ.get("FOREVER_HOST") or socket.gethostname().split(".")[0]
    return name if validate.is_service_name(name) else "host"


def host_file(layout, host):
    return os.path.join(layout.work, "hosts", host, "host.json")


class Load(NamedTuple):
    """What one host sees of a MIN-MAX service."""
    in_flight: int = 0      # requests in flight through its Traefik, and held by its wake proxy
    held: int = 0           # of which its wake proxy holds
    seen: int = 0           # requests seen so far (a change means one came since)


class Reporter:
    """Writes this host's file when it changes, and at least every HEARTBEAT seconds."""

    def __init__(self, layout, host, clock=time.time, monotonic=time.monotonic):
        self.path = host_file(layout, host)
        self.host = host
        self.clock = clock
        self.monotonic = monotonic
        self._last = None
        self._written_at = None

    def report(self, role, since, loads, traefik_port=None):
        body = {"host": self.host, "pid": os.getpid(), "role": role, "since": since,
                "traefik_port": traefik_port, "load": {name: load._asdict() for name, load in sorted(loads.items())}}
        now = self.monotonic()
        if body == self._last and self._written_at is not None and now - self._written_at < HEARTBEAT:
            return False
        try:
            fsutil.atomic_write(self.path, json.dumps(dict(body, updated_at=self.clock()), sort_keys=True))
        except OSError:
            return False        # the lease and state.json are the ones that matter; tried again next pass
        self._last, self._written_at = body, now
        return True


class Others:
    """The other hosts' files, re-read when they change (one stat a host a pass)."""

    def __init__(self, layout, host, monotonic=time.monotonic):
        self.directory = os.path.join(layout.work, "hosts")
        self.host = host
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
