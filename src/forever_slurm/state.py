"""The loop's memory on disk (.work/state.json): written atomically, read back after a restart."""

import json
import logging
import os
import time
from typing import Dict, List, NamedTuple, Optional

from .reconcile import JobMemory, Memory, ServiceMemory, Server, empty_memory
from .slurm import Job

log = logging.getLogger(__name__)

VERSION = 1


class Snapshot(NamedTuple):
    """Everything `status` shows without asking Slurm again."""
    memory: Memory
    jobs: List[Job]                 # the last good squeue observation
    observed_at: Optional[float]
    slurm_ok: Optional[bool]
    slurm_error: str
    slurm_since: Optional[float]    # when slurm_ok last changed
    routes: Dict[str, List[Server]]
    desired: Dict[str, int]
    service_errors: Dict[str, str]  # service -> config problem (bad .sub/.yml)
    updated_at: Optional[float]
    pid: Optional[int]


def empty_snapshot():
    return Snapshot(empty_memory(), [], None, None, "", None, {}, {}, {}, None, None)


def to_json(snapshot):
    mem = snapshot.memory
    data = {
        "version": VERSION,
        "jobs": {k: v._asdict() for k, v in sorted(mem.jobs.items())},
        "services": {k: v._asdict() for k, v in sorted(mem.services.items())},
        "observed": [j._asdict() for j in snapshot.jobs],
        "observed_at": snapshot.observed_at,
        "slurm": {"ok": snapshot.slurm_ok, "error": snapshot.slurm_error, "since": snapshot.slurm_since},
        "routes": {k: [s._asdict() for s in v] for k, v in sorted(snapshot.routes.items())},
        "desired": dict(sorted(snapshot.desired.items())),
        "service_errors": dict(sorted(snapshot.service_errors.items())),
        "updated_at": snapshot.updated_at,
        "pid": snapshot.pid,
    }
    return json.dumps(data, indent=1, sort_keys=True)


def _record(cls, data):
    fields = {k: v for k, v in data.items() if k in cls._fields}
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = tuple(value)
    return cls(**fields)


def from_json(text):
    data = json.loads(text)
    memory = Memory(
        jobs={k: _record(JobMemory, v) for k, v in data.get("jobs", {}).items()},
        services={k: _record(ServiceMemory, v) for k, v in data.get("services", {}).items()},
    )
    slurm_state = data.get("slurm", {})
    return Snapshot(
        memory=memory,
        jobs=[Job(**{f: j.get(f) for f in Job._fields}) for j in data.get("observed", [])],
        observed_at=data.get("observed_at"),
        slurm_ok=slurm_state.get("ok"),
        slurm_error=slurm_state.get("error", ""),
        slurm_since=slurm_state.get("since"),
        routes={k: [Server(s["url"], s.get("weight", 1)) for s in v] for k, v in data.get("routes", {}).items()},
        desired=data.get("desired", {}),
        service_errors=data.get("service_errors", {}),
        updated_at=data.get("updated_at"),
        pid=data.get("pid"),
    )


def load(path):
    """The saved snapshot; an unreadable file is set aside (never deleted) and an empty one returned."""
    try:
        with open(path, encoding="utf-8") as handle:
            return from_json(handle.read())
    except FileNotFoundError:
        return empty_snapshot()
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        aside = "%s.corrupt-%d" % (path, int(time.time()))
        os.replace(path, aside)
        log.error("%s could not be read (%s); kept it as %s and started with an empty memory", path, exc, aside)
        return empty_snapshot()


def save(path, snapshot):
    """Atomic write (temp file + fsync + os.replace)."""
    text = to_json(snapshot)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
