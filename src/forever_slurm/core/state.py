"""The loop's memory on disk (.work/state.json): written atomically, read back leniently after a restart.

state.json is a cache, not the truth: which jobs are ours is rebuilt from Slurm (their working
directory), so a lost or corrupt file costs readiness and crash history, never a job. Reading
never changes anything (`status` reads it too); only the loop sets a corrupt file aside.
"""

import json
import math
from typing import Dict, List, NamedTuple, Optional

from ..common import fsutil
from ..common.errors import ConfigError
from .model import JobMemory, Memory, ServiceMemory, empty_memory
from ..systems.traefik import Server
from ..systems.slurm import Job


VERSION = 3
MAX_BYTES = 256 * 1024 * 1024     # far above 10,000 jobs; a bigger file is not ours


class Snapshot(NamedTuple):
    """Everything `status` shows without asking Slurm again."""
    memory: Memory
    jobs: List[Job]                 # the last good squeue observation of our jobs
    observed_at: Optional[float]
    slurm_ok: Optional[bool]
    slurm_error: str
    slurm_since: Optional[float]    # when slurm_ok last changed
    routes: Dict[str, List[Server]]
    desired: Dict[str, int]
    service_errors: Dict[str, str]  # service -> config problem (bad .sub/.yml)
    updated_at: Optional[float]
    pid: Optional[int]
    foreign: List[Job] = []         # same-named jobs we did not submit: never counted, routed or cancelled
    faults: Dict[str, str] = {}     # what -> problem the loop keeps retrying (disk full, unwritable folder)
    scale: Dict[str, dict] = {}     # MIN-MAX service -> its demand as `status` shows it (demand.report)
    cluster: Dict[str, object] = {}  # nodes down or drained, maintenance windows (loop.cluster_report)


def empty_snapshot():
    return Snapshot(empty_memory(), [], None, None, "", None, {}, {}, {}, None, None, [], {}, {}, {})


def to_json(snapshot):
    """state.json's text. Records are written as lists under the field names of `fields` (version 3):
    json's C encoder writes a tuple as it is, where a dict per record (version 2) cost a Python call
    per job, and at 10,000 jobs most of a look. No indent, for the same reason."""
    mem = snapshot.memory
    data = {
        "version": VERSION,
        "fields": {"job": JobMemory._fields, "service": ServiceMemory._fields, "observed": Job._fields,
                   "server": Server._fields},
        "jobs": dict(sorted(mem.jobs.items())),
        "services": dict(sorted(mem.services.items())),
        "observed": snapshot.jobs,
        "foreign": snapshot.foreign,
        "observed_at": snapshot.observed_at,
        "slurm": {"ok": snapshot.slurm_ok, "error": snapshot.slurm_error, "since": snapshot.slurm_since},
        "routes": dict(sorted(snapshot.routes.items())),
        "desired": dict(sorted(snapshot.desired.items())),
        "service_errors": dict(sorted(snapshot.service_errors.items())),
        "faults": dict(sorted(snapshot.faults.items())),
        "scale": dict(sorted(snapshot.scale.items())),
        "cluster": snapshot.cluster,
        "updated_at": snapshot.updated_at,
        "pid": snapshot.pid,
    }
    return json.dumps(data, sort_keys=True)


class _ListOf(NamedTuple):
    """A field saved as a JSON list (read back as a tuple) whose every item has one of `items` types."""
    items: tuple


# Field types of the persisted records: a value of another type drops the record, not the loop.
# Numbers are finite (NaN and Infinity would poison every comparison and sum the planner makes).
_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
_NODES = _ListOf((str,))
_SECONDS = _ListOf(_NUMBER)
_TYPES = {
    JobMemory: {"service": str, "submitted_at": _OPTIONAL_NUMBER, "seen_at": _OPTIONAL_NUMBER,
                "running_since": _OPTIONAL_NUMBER, "url": str, "comment_problem": str,
                "ready_since": _OPTIONAL_NUMBER, "ever_ready": bool, "probe_failures": int, "probe_detail": str,
                "drain_since": _OPTIONAL_NUMBER, "cancelled_at": _OPTIONAL_NUMBER, "cancel_failures": int,
                "cancel_retry_at": _OPTIONAL_NUMBER, "excluded": _NODES, "publish_late": bool,
                "unready_at": _OPTIONAL_NUMBER, "ends_at": _OPTIONAL_NUMBER, "cut_short_at": _OPTIONAL_NUMBER,
                "held_since": _OPTIONAL_NUMBER, "renewing_since": _OPTIONAL_NUMBER, "not_queued": bool},
    ServiceMemory: {"failures": int, "next_try": _NUMBER, "last_error": str, "startup": _SECONDS,
                    "drains": _SECONDS},
    Job: {"job_id": str, "state": str, "name": str, "nodes": str, "time_left": (int, type(None)),
          "time_used": (int, type(None)), "reason": str, "comment": str, "workdir": str,
          "starts_in": (int, type(None))},
    Server: {"url": str, "weight": int},
}


def _record(cls, data, fields=None):
    """cls from a dict of its fields, or from a list of them in the order `fields` names (version 3);
    None when a field has the wrong type (missing ones default)."""
    if isinstance(data, list) and fields is not None:
        data = dict(zip(fields, data))
    if not isinstance(data, dict):
        return None
    types = _TYPES[cls]
    fields = {}
    for key, value in data.items():
        if key not in types:
            continue            # a field of another version
        expected = types[key]
        if isinstance(expected, _ListOf):
            if not isinstance(value, list) or not all(_is_a(item, expected.items) for item in value):
                return None
            value = tuple(value)
        elif not _is_a(value, expected):
            return None
        fields[key] = value
    if cls is JobMemory and "service" not in fields:
        return None
    if cls is Job and not all(k in fields for k in ("job_id", "state", "name")):
        return None
    if cls is Server and "url" not in fields:
        return None
    try:
        return cls(**{k: fields.get(k, _default(cls, k)) for k in cls._fields})
    except TypeError:
        return None


def _is_a(value, types):
    """isinstance, except that a bool is no number and a number must be finite."""
    if isinstance(value, bool):
        return bool in (types if isinstance(types, tuple) else (types,))
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _default(cls, key):
    defaults = getattr(cls, "_field_defaults", {})
    if key in defaults:
        return defaults[key]
    return "" if _TYPES[cls][key] is str else None


def _mapping(data, key):
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _records(cls, items, fields=None):
    found = (_record(cls, item, fields) for item in items) if isinstance(items, list) else ()
    return [r for r in found if r is not None]


def from_json(text):
    """A Snapshot from state.json's text; records of the wrong shape are dropped. ValueError if not JSON."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fields = _fields(data)
    jobs = {k: _record(JobMemory, v, fields["job"]) for k, v in _mapping(data, "jobs").items()}
    services = {k: _record(ServiceMemory, v, fields["service"]) for k, v in _mapping(data, "services").items()}
    slurm_state = _mapping(data, "slurm")
    routes = {}
    for name, servers in _mapping(data, "routes").items():
        routes[name] = _records(Server, servers, fields["server"])
    return Snapshot(
        memory=Memory(jobs={k: v for k, v in jobs.items() if v is not None},
                      services={k: v for k, v in services.items() if v is not None}),
        jobs=_records(Job, data.get("observed"), fields["observed"]),
        observed_at=_number_or_none(data.get("observed_at")),
        slurm_ok=slurm_state.get("ok") if isinstance(slurm_state.get("ok"), bool) else None,
        slurm_error=str(slurm_state.get("error") or ""),
        slurm_since=_number_or_none(slurm_state.get("since")),
        routes=routes,
        desired={k: v for k, v in _mapping(data, "desired").items() if _is_a(v, int)},
        service_errors={k: str(v) for k, v in _mapping(data, "service_errors").items()},
        updated_at=_number_or_none(data.get("updated_at")),
        pid=data.get("pid") if isinstance(data.get("pid"), int) and not isinstance(data.get("pid"), bool) else None,
        foreign=_records(Job, data.get("foreign"), fields["observed"]),
        faults={k: str(v) for k, v in _mapping(data, "faults").items()},
        scale={k: _scale_entry(v) for k, v in _mapping(data, "scale").items() if isinstance(v, dict)},
        cluster=_cluster_entry(_mapping(data, "cluster")),
    )


def _cluster_entry(entry):
    """What status shows of the cluster: text only, so a bad entry can only show as odd text."""
    if not entry:
        return {}
    unavailable = entry.get("unavailable")
    windows = entry.get("windows")
    return {"unavailable": {str(k): str(v) for k, v in unavailable.items()} if isinstance(unavailable, dict) else {},
            "windows": {str(k): str(v) for k, v in windows.items()} if isinstance(windows, dict) else {},
            "read_at": _number_or_none(entry.get("read_at")), "error": str(entry.get("error") or "")}


def _fields(data):
    """{kind: field names} a version 3 file's lists are in; None for a kind it does not name."""
    named = _mapping(data, "fields")
    found = {}
    for kind in ("job", "service", "observed", "server"):
        names = named.get(kind)
        ok = isinstance(names, list) and all(isinstance(name, str) for name in names)
        found[kind] = names if ok else None
    return found


def _scale_entry(entry):
    """A MIN-MAX service's saved demand; what a restart resumes from must be a number or nothing."""
    clean = dict(entry)
    target = entry.get("target")
    clean["target"] = target if isinstance(target, int) and not isinstance(target, bool) and target >= 0 else 0
    clean["last_request_at"] = _number_or_none(entry.get("last_request_at"))
    return clean


def _number_or_none(value):
    return value if _is_a(value, _NUMBER) else None


def read(path):
    """(snapshot, problem): the saved snapshot, or an empty one and why ('' when there is no file yet).

    Changes nothing on disk."""
    try:
        text = fsutil.read_text_file(path, "state file", limit=MAX_BYTES)
    except FileNotFoundError:
        return empty_snapshot(), ""
    except ConfigError as exc:
        return empty_snapshot(), str(exc)
    try:
        return from_json(text), ""
    except RecursionError:      # (json nests only so deep)
        return empty_snapshot(), "%s: cannot be read (nested too deeply)" % path
    except ValueError as exc:
        return empty_snapshot(), "%s: cannot be read (%s)" % (path, exc)


def load(path):
    """The saved snapshot, or an empty one when it is missing or unreadable (for readers)."""
    return read(path)[0]


def set_aside(path, now=None):
    """Keep an unreadable state file under its backup name (never deleted); the new name or None."""
    try:
        return fsutil.move_aside(path, now=now)
    except OSError:
        return None


def save(path, snapshot):
    """Atomic write; OSError (full disk, unwritable folder) is the caller's to report and retry."""
    fsutil.atomic_write(path, to_json(snapshot))


HEARTBEAT = 300.0   # seconds: state.json is rewritten at least this often while the loop runs


class Saver:
    """Writes state.json when what it holds changes, otherwise once every HEARTBEAT seconds.

    The file lives on the users' home filesystem (often NFS); a loop that rewrote and fsync'd it at
    every probe pass wrote it 43,000 times a day for nothing. What counts as a change: a job's or a
    service's memory, the routes, the desired counts, Slurm's health, a fault or service error, the
    jobs a look saw (not their time left: that is counted from observed_at), a MIN-MAX service's
    target or phase (not its load, which the heartbeat refreshes). A failure to write is reported
    once (faults) and retried at the next pass."""

    def __init__(self, path, reserve, faults, heartbeat=HEARTBEAT):
        self.path = path
        self.reserve = reserve
        self.faults = faults
        self.heartbeat = heartbeat
        self._saved = None              # the material of the last snapshot written
        self._saved_at = None
        self._observed = (None, None)   # (the jobs list last summarised, its summary): once per look

    def save(self, snapshot, now, force=False):
        """True when state.json holds `snapshot`'s material now (written, or unchanged)."""
        material = self._material(snapshot)
        due = self._saved_at is None or now - self._saved_at >= self.heartbeat or now < self._saved_at
        if not force and not due and material == self._saved:
            return True
        try:
            self.reserve.write(lambda: save(self.path, snapshot))
        except OSError as exc:
            self.faults.report("state", "cannot save %s: %s; retrying every pass, nothing submitted is "
                               "forgotten while the loop runs" % (self.path, exc.strerror or exc))
            return False
        self.faults.clear("state")
        self._saved, self._saved_at = material, now
        return True

    def _material(self, snapshot):
        if self._observed[0] is not snapshot.jobs:
            self._observed = (snapshot.jobs, _observed_summary(snapshot.jobs, snapshot.observed_at))
        scale = {name: (entry.get("target"), entry.get("phase"), entry.get("held"), entry.get("wake_port"))
                 for name, entry in snapshot.scale.items()}
        return (snapshot.memory, snapshot.routes, snapshot.desired, snapshot.service_errors, snapshot.faults,
                snapshot.cluster,
                snapshot.slurm_ok, snapshot.slurm_error, snapshot.slurm_since, self._observed[1],
                _observed_summary(snapshot.foreign, snapshot.observed_at), scale, snapshot.pid)


def _observed_summary(jobs, observed_at):
    """The jobs of a look without what only time changes: ends as absolute times (to 10 s)."""
    base = observed_at or 0.0
    return tuple((job.job_id, job.state, job.name, job.nodes, job.reason, job.comment, job.workdir,
                  None if job.time_left is None else int((base + job.time_left) // 10)) for job in jobs)
