"""status.collect/render: a pure reader built on the planner's own view of each service."""

import json
import os

from forever_slurm.core import model, planner, state
from forever_slurm.systems import traefik
from forever_slurm.common import settings
from forever_slurm.observe import status
from forever_slurm.systems.slurm import Job


def snapshot_with(jobs, memory, now):
    return state.empty_snapshot()._replace(memory=memory, jobs=jobs, observed_at=now, updated_at=now,
                                           desired={"svc": 2},
                                           routes={"svc": [traefik.Server("http://n1:1", 1)]})


def test_counts_lead_and_health_come_from_the_planner(root):
    (root / ".env").write_text('SERVICE_LIST="svc/2"\n')
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    now = 1000.0
    jobs = [Job("1", "R", "svc", "n1", 3600, 60, "None", "traefik,svc,http://n1:1"),
            Job("2", "R", "svc", "n2", 3600, 60, "None", "traefik,svc,http://n2:2"),
            Job("3", "PD", "svc", "", None, 0, "Resources", "")]
    memory = model.Memory({
        "1": model.JobMemory("svc", seen_at=1, url="http://n1:1", ready_since=900, ever_ready=True),
        "2": model.JobMemory("svc", seen_at=1, url="http://n2:2", ready_since=900, cancel_failures=1),
        "3": model.JobMemory("svc", seen_at=1),
        model.INTENT_PREFIX + "svc:1": model.JobMemory("svc", submitted_at=990),
    }, {"svc": model.ServiceMemory(startup=(30.0,))})
    state.save(layout.state_file, snapshot_with(jobs, memory, now))
    report = status.collect(layout, now=now)
    (svc,) = report["services"]
    assert (svc["running"], svc["pending"], svc["pending_reasons"]) == (2, 2, ["Resources"])
    assert svc["renew_lead_seconds"] == planner.renew_lead(memory.services["svc"], model.Policy())
    health = {j["job_id"]: j["health"] for j in report["jobs"]}
    assert health == {"1": "ready", "2": "stopping (scancel failed, retrying)", "3": "pending"}
    text = status.render(report)
    assert "svc" in text and "loop: not running" in text


def test_a_missing_state_reads_as_empty_without_creating_anything(root):
    layout = settings.Layout(str(root))
    report = status.collect(layout, now=1.0)
    assert report["services"] == [] and report["state_problem"] == ""
    assert os.listdir(str(root)) == []


def _scale_entry(phase, target, held=0, waited=0.0, load=0.0, per_backend=None):
    return {"low": 0, "high": 3, "target": target, "load": load, "per_backend": per_backend,
            "last_request_at": 990.0, "held": held, "held_seconds": waited, "phase": phase}


def test_min_max_services_show_asleep_waking_and_up_with_target_and_load(root):
    (root / ".env").write_text('SERVICE_LIST="a/0-3 b/0-3 c/0-3"\n')
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    snap = state.empty_snapshot()._replace(
        observed_at=1000.0, updated_at=1000.0, desired={"a": 0, "b": 1, "c": 2},
        scale={"a": _scale_entry("asleep", 0), "b": _scale_entry("waking", 1, held=3, waited=12.4),
               "c": _scale_entry("up", 2, load=5.5, per_backend=2.75)})
    state.save(layout.state_file, snap)
    report = status.collect(layout, now=1000.0)
    rows = {s["service"]: s for s in report["services"]}
    assert (rows["a"]["desired"], rows["b"]["desired"], rows["c"]["desired"]) == (0, 1, 2), "the loop's target"
    assert rows["b"]["scale"]["held"] == 3
    text = status.render(report)
    lines = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in "abc"}
    assert "0 (0-3)" in lines["a"] and "asleep" in lines["a"]
    assert "waking, 3 requests held for 12s" in lines["b"]
    assert "up, load 5.5 in flight (2.8 a backend)" in lines["c"]


class _Stop(Exception):
    pass


def test_show_prints_once_or_every_interval_and_reads_only(root, capsys):
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    assert status.show(layout, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["services"] == []
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            raise _Stop()
    try:
        status.show(layout, every=2.5, sleep=sleep)
    except _Stop:
        pass
    out = capsys.readouterr().out
    assert naps == [2.5, 2.5] and out.count("loop: not running") == 2
    assert os.listdir(layout.work) == []
