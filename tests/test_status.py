"""status.collect/render: a pure reader built on the planner's own view of each service."""

import os

from forever_slurm.core import reconcile, state
from forever_slurm.common import settings
from forever_slurm.observe import status
from forever_slurm.systems.slurm import Job


def snapshot_with(jobs, memory, now):
    return state.empty_snapshot()._replace(memory=memory, jobs=jobs, observed_at=now, updated_at=now,
                                           desired={"svc": 2},
                                           routes={"svc": [reconcile.Server("http://n1:1", 1)]})


def test_counts_lead_and_health_come_from_the_planner(root):
    (root / ".env").write_text('SERVICE_LIST="svc/2"\n')
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    now = 1000.0
    jobs = [Job("1", "R", "svc", "n1", 3600, 60, "None", "traefik,svc,http://n1:1"),
            Job("2", "R", "svc", "n2", 3600, 60, "None", "traefik,svc,http://n2:2"),
            Job("3", "PD", "svc", "", None, 0, "Resources", "")]
    memory = reconcile.Memory({
        "1": reconcile.JobMemory("svc", seen_at=1, url="http://n1:1", ready_since=900, ever_ready=True),
        "2": reconcile.JobMemory("svc", seen_at=1, url="http://n2:2", ready_since=900, cancel_failures=1),
        "3": reconcile.JobMemory("svc", seen_at=1),
        reconcile.INTENT_PREFIX + "svc:1": reconcile.JobMemory("svc", submitted_at=990),
    }, {"svc": reconcile.ServiceMemory(startup=(30.0,))})
    state.save(layout.state_file, snapshot_with(jobs, memory, now))
    report = status.collect(layout, now=now)
    (svc,) = report["services"]
    assert (svc["running"], svc["pending"], svc["pending_reasons"]) == (2, 2, ["Resources"])
    assert svc["renew_lead_seconds"] == reconcile.renew_lead(2, memory.services["svc"], reconcile.Policy())
    health = {j["job_id"]: j["health"] for j in report["jobs"]}
    assert health == {"1": "ready", "2": "stopping (scancel failed, retrying)", "3": "pending"}
    text = status.render(report)
    assert "svc" in text and "loop: not running" in text


def test_a_missing_state_reads_as_empty_without_creating_anything(root):
    layout = settings.Layout(str(root))
    report = status.collect(layout, now=1.0)
    assert report["services"] == [] and report["state_problem"] == ""
    assert os.listdir(str(root)) == []
