"""The loop's memory on disk (.work/state.json): written atomically, read back leniently after a restart.

state.json is a cache, not the truth: which jobs are ours is rebuilt from Slurm (their working
directory), so a lost or corrupt file costs readiness and crash history, never a job. Reading
never changes anything (`status` reads it too); only the loop sets a corrupt file aside.
"""

import json
import logging
import math
import os
import time
from typing import Dict, List, NamedTuple, Optional

from ..common import fsutil
from ..common.errors import ConfigError
from .model import JobMemory, Memory, ServiceMemory, empty_memory
from ..systems.traefik import Server
from ..systems.slurm import Job

log = logging.getLogger(__name__)

VERSION = 2
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
    scale: Dict[str, dict] = {}     # MIN-MAX service -> its demand as `status` shows it (loop._scale_report)


def empty_snapshot():
    return Snapshot(empty_memory(), [], None, None, "", None, {}, {}, {}, None, None, [], {}, {})


def to_json(snapshot):
    mem = snapshot.memory
    data = {
        "version": VERSION,
        "jobs": {k: v._asdict() for k, v in sorted(mem.jobs.items())},
        "services": {k: v._asdict() for k, v in sorted(mem.services.items())},
        "observed": [j._asdict() for j in snapshot.jobs],
        "foreign": [j._asdict() for j in snapshot.foreign],
        "observed_at": snapshot.observed_at,
        "slurm": {"ok": snapshot.slurm_ok, "error": snapshot.slurm_error, "since": snapshot.slurm_since},
        "routes": {k: [s._asdict() for s in v] for k, v in sorted(snapshot.routes.items())},
        "desired": dict(sorted(snapshot.desired.items())),
        "service_errors": dict(sorted(snapshot.service_errors.items())),
        "faults": dict(sorted(snapshot.faults.items())),
        "scale": dict(sorted(snapshot.scale.items())),
        "updated_at": snapshot.updated_at,
        "pid": snapshot.pid,
    }
    # No indent: json's C encoder then does the work. With indent it falls back to pure Python, and at
    # 10,000 jobs that took 0.4 s of CPU on every pass (cycle and probe tick), four times the rest.
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
                "cancel_retry_at": _OPTIONAL_NUMBER, "excluded": _NODES, "publish_late": bool},
    ServiceMemory: {"failures": int, "next_try": _NUMBER, "last_error": str, "startup": _SECONDS,
                    "drains": _SECONDS},
    Job: {"job_id": str, "state": str, "name": str, "nodes": str, "time_left": (int, type(None)),
          "time_used": (int, type(None)), "reason": str, "comment": str, "workdir": str},
    Server: {"url": str, "weight": int},
}


def _record(cls, data):
    """cls from a dict of its fields, or None when a field has the wrong type (missing ones default)."""
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


def _records(cls, items):
    found = (_record(cls, item) for item in items) if isinstance(items, list) else ()
    return [r for r in found if r is not None]


def from_json(text):
    """A Snapshot from state.json's text; records of the wrong shape are dropped. ValueError if not JSON."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    jobs = {k: _record(JobMemory, v) for k, v in _mapping(data, "jobs").items()}
    services = {k: _record(ServiceMemory, v) for k, v in _mapping(data, "services").items()}
    slurm_state = _mapping(data, "slurm")
    routes = {}
    for name, servers in _mapping(data, "routes").items():
        routes[name] = _records(Server, servers)
    return Snapshot(
        memory=Memory(jobs={k: v for k, v in jobs.items() if v is not None},
                      services={k: v for k, v in services.items() if v is not None}),
        jobs=_records(Job, data.get("observed")),
        observed_at=_number_or_none(data.get("observed_at")),
        slurm_ok=slurm_state.get("ok") if isinstance(slurm_state.get("ok"), bool) else None,
        slurm_error=str(slurm_state.get("error") or ""),
        slurm_since=_number_or_none(slurm_state.get("since")),
        routes=routes,
        desired={k: v for k, v in _mapping(data, "desired").items() if _is_a(v, int)},
        service_errors={k: str(v) for k, v in _mapping(data, "service_errors").items()},
        updated_at=_number_or_none(data.get("updated_at")),
        pid=data.get("pid") if isinstance(data.get("pid"), int) and not isinstance(data.get("pid"), bool) else None,
        foreign=_records(Job, data.get("foreign")),
        faults={k: str(v) for k, v in _mapping(data, "faults").items()},
        scale={k: _scale_entry(v) for k, v in _mapping(data, "scale").items() if isinstance(v, dict)},
    )


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
    """Keep an unreadable state file as state.json.corrupt-<time> (never deleted); the new name or None."""
    aside = "%s.corrupt-%d" % (path, int(time.time() if now is None else now))
    try:
        os.replace(path, aside)
        return aside
    except OSError:
        return None


def save(path, snapshot):
    """Atomic write; OSError (full disk, unwritable folder) is the caller's to report and retry."""
    fsutil.atomic_write(path, to_json(snapshot))
