"""Who leads: of the loops of one root (one per login node, the root on the shared home filesystem),
one submits, renews, drains and cancels; every loop routes its own Traefik. Chosen through the shared
filesystem, without flock/fcntl (not safe on every NFS: `nolock` mounts, locks lost when the server
restarts, a lock a paused process keeps holding).

The lease is a directory of terms, `.work/leader/term-<N>`: the holder of the highest N leads.
- Claiming term N: write a private file, then link(2) it to `term-<N>`. link is atomic on NFS and fails
  with EEXIST for everyone but one claimer; when its answer was lost, the private file's link count
  (2) tells the truth (open(2)'s recipe for O_EXCL on NFS).
- Renewing: the leader rewrites its term (a new file renamed over it: atomic) with its beat counter
  raised, every `renew` seconds, and then checks that no higher term exists.
- Lapsing: others never compare clocks (login nodes' clocks differ). A follower notes, by its own
  monotonic clock, when the term or its beat last changed; a term unchanged for 3 x its announced
  renew interval + 5 s has lapsed (Kubernetes' leader election reads the lease the same way), and
  the follower claims the next term. A loop that finds its own host's term held by a pid that no
  longer runs there takes over at once (a restart), and a leader that stops cleanly releases.
- Fencing: a leader acts only while its last good renewal is younger than 2.5 renew intervals (10 s)
  by its own monotonic clock, well before anyone may take over (17 s), and checks it before every
  action. A leader paused (SIGSTOP, a stalled filesystem) and woken later finds its renewal old, stops
  acting, renews, sees the higher term and follows. What a deposed leader may still have done in the
  instant between its check and sbatch is one job too many, which the new leader drains as surplus.
- The renew interval adapts: `renew` while other hosts are alive (their host.json fresh), else
  `quiet_renew` (30 s), so a root on one host costs one small rename every 30 s.
"""

import json
import os
import secrets
import time
from typing import NamedTuple

from ..common import fsutil
from ..common.validate import ascii_digits

RENEW = 4.0             # seconds between renewals while other hosts run (takeover within about 20 s)
QUIET_RENEW = 30.0      # ... while this host is the only one
DEADLINE_SHARE = 2.5    # a leader that could not renew for this many intervals stops acting (10 s at 4 s)
KEEP_TERMS = 5          # old term files kept (the leader removes older ones)


class Term(NamedTuple):
    epoch: int
    host: str
    pid: int
    token: str
    beat: int = 0
    renew: float = RENEW    # the holder's announced renew interval
    since: float = 0.0      # wall time the term began (for status only)
    at: float = 0.0         # wall time of the last beat (for status only)
    released: bool = False  # the holder stopped cleanly: take over at once

    @property
    def lapse(self):
        """Seconds without a change after which others take over."""
        return 3 * self.renew + 5.0

    @property
    def deadline(self):
        """Seconds after its last good renewal the holder stops acting: well before the lapse."""
        return DEADLINE_SHARE * self.renew


class Lease:
    """This loop's view of the lease. step() at every pass; may_act() before every action."""

    def __init__(self, directory, host, pid=None, clock=time.time, monotonic=time.monotonic,
                 pid_alive=None):
        self.directory = directory
        self.host = host
        self.pid = os.getpid() if pid is None else pid
        self.token = secrets.token_hex(8)
        self.clock = clock
        self.monotonic = monotonic
        self.pid_alive = pid_alive or _pid_alive
        self.held = None            # our Term while we lead
        self.renewed_at = None      # monotonic time of our last good renewal
        self.seen = None            # (epoch, beat, monotonic time first seen) of the current term
        self.current = None         # the highest Term as last read
        self.error = ""             # the last filesystem problem ('' when none)
        self.changed = False        # the last step() made us leader or took it away

    # -- the loop's side ----------------------------------------------------------------------------
    def step(self, others_alive=True):
        """Renew (leader) or watch, and claim a lapsed term. True while this loop leads."""
        was = self.held is not None
        renew = RENEW if others_alive else QUIET_RENEW
        try:
            if self.held is not None:
                self._renew(renew)
            else:
                self._watch(renew)
            self.error = ""
        except OSError as exc:
            self.error = "%s: %s" % (self.directory, exc.strerror or exc)
        self.changed = was != (self.held is not None)
        return self.held is not None

    def may_act(self):
        """True when this loop leads and renewed recently enough (Term.deadline): safe to act now."""
        return (self.held is not None and self.renewed_at is not None
                and self.monotonic() - self.renewed_at < self.held.deadline)

    def release(self):
        """A clean stop: the next loop takes over at once instead of waiting for the lapse."""
        if self.held is not None:
            try:
                self._write(self.held._replace(beat=self.held.beat + 1, released=True, at=self.clock()))
            except OSError:
                pass
            self.held = None

    # -- inside ----------------------------------------------------------------------------------
    def _renew(self, renew):
        now = self.monotonic()
        if self.renewed_at is not None and now - self.renewed_at < min(renew, self.held.renew):
            return
        term = self.held._replace(beat=self.held.beat + 1, renew=renew, at=self.clock())
        self._write(term)
        if not self._check_still_highest():
            return
        self.held, self.renewed_at = term, self.monotonic()
        self._tidy(term.epoch)

    def _check_still_highest(self):
        """After a renewal: a higher term means someone took over while we could not renew (a pause):
        we follow from now on."""
        current = read_current(self.directory)
        # A directory listing may be cached on NFS (acdirmax); opening the next term's name asks the server.
        after = _read(os.path.join(self.directory, "term-%d" % (self.held.epoch + 1)), self.held.epoch + 1)
        current = after if after is not None and (current is None or after.epoch > current.epoch) else current
        self.current = current
        if current is None or (current.epoch == self.held.epoch and current.token == self.token):
            return True
        self.held, self.renewed_at = None, None
        self.seen = (current.epoch, current.beat, self.monotonic())
        return False

    def _watch(self, renew):
        current = read_current(self.directory)
        self.current = current
        now = self.monotonic()
        if current is None:     # no term yet, or none readable: the next number after any file there
            return self._claim(max(_epochs(self.directory) or [0]) + 1, renew)
        if self.seen is None or self.seen[:2] != (current.epoch, current.beat):
            self.seen = (current.epoch, current.beat, now)
        lapsed = now - self.seen[2] >= current.lapse
        restarted = current.host == self.host and current.pid != self.pid and not self.pid_alive(current.pid)
        if current.released or lapsed or restarted:
            self._claim(current.epoch + 1, renew)

    def _claim(self, epoch, renew):
        now = self.clock()
        term = Term(epoch, self.host, self.pid, self.token, 0, renew, now, now)
        if not _link_new(self.directory, "term-%d" % epoch, _encode(term)):
            return False
        self.held, self.renewed_at = term, self.monotonic()
        self.current = term
        return True

    def _write(self, term):
        path = os.path.join(self.directory, "term-%d" % term.epoch)
        tmp = os.path.join(self.directory, ".%s-%d-%s" % (self.host, self.pid, secrets.token_hex(4)))
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, fsutil.PRIVATE_FILE), "w") as handle:
            handle.write(_encode(term))
        os.rename(tmp, path)

    def _tidy(self, epoch):
        for number in _epochs(self.directory):
            if number < epoch - KEEP_TERMS:
                try:
                    os.unlink(os.path.join(self.directory, "term-%d" % number))
                except OSError:
                    pass


def read_current(directory):
    """The highest readable Term in directory, or None (no term yet, or none readable)."""
    for epoch in sorted(_epochs(directory), reverse=True):
        term = _read(os.path.join(directory, "term-%d" % epoch), epoch)
        if term is not None:
            return term
    return None


def _epochs(directory):
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        number = name[len("term-"):]
        if name.startswith("term-") and ascii_digits(number) and len(number) < 18:
            found.append(int(number))
    return found


def _read(path, epoch):
    try:
        with open(path) as handle:           # an open(2) also refreshes NFS's cached attributes
            data = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return Term(epoch, str(data["host"]), int(data["pid"]), str(data["token"]), int(data.get("beat", 0)),
                    max(1.0, min(600.0, float(data.get("renew", RENEW)))), float(data.get("since", 0.0)),
                    float(data.get("at", 0.0)), bool(data.get("released", False)))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _encode(term):
    return json.dumps({"host": term.host, "pid": term.pid, "token": term.token, "beat": term.beat,
                       "renew": term.renew, "since": term.since, "at": term.at, "released": term.released})


def _link_new(directory, name, text):
    """True when `name` did not exist and now holds `text`, created by us (fsutil.create_once: link(2)
    of a private file, exclusive on NFS too)."""
    fsutil.make_private_dir(directory)
    return fsutil.create_once(os.path.join(directory, name), text)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True         # it exists, owned by someone else


def describe(term, now=None):
    """What status says of a term (None: no leader yet)."""
    if term is None:
        return None
    now = time.time() if now is None else now
    return {"host": term.host, "pid": term.pid, "epoch": term.epoch, "since": term.since,
            "beat_age": None if not term.at else max(0.0, now - term.at), "released": term.released}
