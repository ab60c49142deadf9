"""loop.Controller against the shim Slurm, with a fake clock and a fake prober."""

import json
import os
import subprocess
import sys

from forever_slurm.core import lock, loop, model, scheduler, state
from forever_slurm.common import settings
from forever_slurm.systems import slurm


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Prober:
    """Every published URL answers, except those in `dead`."""

    def __init__(self):
        self.dead = set()
        self.calls = 0

    def __call__(self, targets, timeout=2.0, own_ports=()):
        self.calls += 1
        return {job_id: model.ProbeResult(url not in self.dead, "" if url not in self.dead else "refused",
                                              refused=url in self.dead)
                for job_id, (url, *_) in targets.items()}


def calls(shim_state):
    path = shim_state / "calls.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def jobs_file(shim_state):
    return json.loads((shim_state / "jobs.json").read_text())["jobs"]


def publish_all(shim_state):
    """What each job's script would do: publish traefik,<name>,http://<node>:<port>."""
    data = json.loads((shim_state / "jobs.json").read_text())
    for job in data["jobs"]:
        if job["state"] == "R" and not job["comment"]:
            job["comment"] = "traefik,%s,http://%s:%d" % (job["name"], job["nodes"], 40000 + int(job["id"]) % 1000)
    (shim_state / "jobs.json").write_text(json.dumps(data))


def routed(ctl, clock, shim_state):
    """The state most tests start from: jobs submitted, published, probed and routed."""
    ctl.look()
    publish_all(shim_state)
    clock.sleep(10)
    ctl.look()


def make(root, env='SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n'):
    if "FS_SLEEP_INTERVAL" not in env:
        env += "FS_SLEEP_INTERVAL=10\n"     # most tests here count looks at a 10 s interval
    (root / ".env").write_text(env)
    layout = settings.Layout(str(root))
    layout.make_dirs()
    clock = Clock()
    prober = Prober()
    ctl = loop.Controller(layout, settings.load(layout), slurm.Slurm(), clock=clock,
                          probe_all=prober)
    return ctl, clock, prober, layout


def test_first_cycle_submits_then_routes_once_published(root, shim_state):
    ctl, clock, prober, layout = make(root)
    assert ctl.look()
    # squeue, then (at the first look, and every 10 min) nodes down and reservations, then two jobs
    assert [c[0] for c in calls(shim_state)] == ["squeue", "sinfo", "scontrol", "sbatch", "sbatch"]
    submitted = jobs_file(shim_state)
    assert all(j["chdir"] == layout.slurm_output and j["env_root"] == layout.root for j in submitted)
    watch = os.path.join(layout.watch, "hello-python.yml")
    assert "servers: []" in open(watch).read()
    publish_all(shim_state)
    clock.sleep(10)
    assert ctl.look()
    text = open(watch).read()
    urls = ["http://%s:%d" % (j["nodes"], 40000 + int(j["id"]) % 1000) for j in submitted]
    assert all(u in text for u in urls)


def test_steady_state_is_one_squeue_per_cycle(root, shim_state):
    ctl, clock, prober, layout = make(root)
    ctl.look()
    publish_all(shim_state)
    (shim_state / "calls.log").write_text("")
    for _ in range(5):
        clock.sleep(10)
        ctl.look()
    assert [c[0] for c in calls(shim_state)] == ["squeue"] * 5


def test_spread_submits_one_per_cycle_on_distinct_nodes(root, shim_state):
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/3"\n')
    for _ in range(3):
        ctl.look()
        clock.sleep(10)
    sbatches = [c for c in calls(shim_state) if c[0] == "sbatch"]
    assert len(sbatches) == 3
    assert sorted(j["nodes"] for j in jobs_file(shim_state)) == ["node1", "node2", "node3"]


def test_second_job_spreads_to_another_node(root, shim_state):
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\n')
    ctl.settings = settings.load(layout)
    clock.sleep(10)
    ctl.look()
    sbatches = [c for c in calls(shim_state) if c[0] == "sbatch"]
    assert "--exclude=node1" in sbatches[1]
    assert [j["nodes"] for j in jobs_file(shim_state)] == ["node1", "node2"]


def test_spread_falls_back_when_every_node_is_excluded(root, shim_state, monkeypatch):
    monkeypatch.setenv("FS_SHIM_NODES", "node1")
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\n')
    ctl.settings = settings.load(layout)
    clock.sleep(10)
    ctl.look()
    assert len(jobs_file(shim_state)) == 2
    sbatches = [c for c in calls(shim_state) if c[0] == "sbatch"]
    assert "--exclude=node1" in sbatches[1] and not any(a.startswith("--exclude") for a in sbatches[2])


def test_slurm_down_is_unknown_not_empty(root, shim_state):
    ctl, clock, prober, layout = make(root)
    routed(ctl, clock, shim_state)
    watch = os.path.join(layout.watch, "hello-python.yml")
    before = open(watch).read()
    (shim_state / "fail-squeue").write_text("slurm_load_jobs error: Unable to contact slurm controller\n")
    (shim_state / "calls.log").write_text("")
    for _ in range(3):
        clock.sleep(10)
        assert ctl.look() is False
    assert [c[0] for c in calls(shim_state)] == ["squeue"] * 3      # no sbatch, no scancel
    assert open(watch).read() == before                               # routes kept
    assert ctl.next_look_in() == 40                             # backoff: 10, 20, 40 ...
    assert state.load(layout.state_file).slurm_ok is False
    (shim_state / "fail-squeue").unlink()
    clock.sleep(40)
    assert ctl.look() is True and ctl.next_look_in() == 10


def test_looks_again_soon_after_submitting(root, shim_state):
    ctl, clock, prober, layout = make(root)
    assert ctl.next_look_in() == 0               # no look yet: look now
    ctl.look()                                   # submits: the jobs are starting
    assert ctl.next_look_in() == 2
    publish_all(shim_state)
    clock.sleep(2)
    ctl.look()                                   # both ready
    assert ctl.next_look_in() == 10
    clock.sleep(40)
    assert ctl.next_look_in() == 10


def test_hanging_squeue_times_out_as_unknown(root, shim_state):
    ctl, clock, prober, layout = make(root)
    ctl.slurm.timeout = 1
    (shim_state / "hang-squeue").write_text("5")
    assert ctl.look() is False
    assert not [c for c in calls(shim_state) if c[0] == "sbatch"]


def test_dead_backend_leaves_the_config_on_a_probe_tick(root, shim_state):
    ctl, clock, prober, layout = make(root)
    routed(ctl, clock, shim_state)
    watch = os.path.join(layout.watch, "hello-python.yml")
    first = [j for j in jobs_file(shim_state)][0]
    dead = "http://%s:%d" % (first["nodes"], 40000 + int(first["id"]) % 1000)
    assert dead in open(watch).read()
    prober.dead.add(dead)
    (shim_state / "calls.log").write_text("")
    clock.sleep(2)
    ctl.probe_pass()
    assert dead not in open(watch).read()
    assert calls(shim_state) == []                                    # a tick never calls Slurm


def test_lowering_n_cancels_only_our_jobs(root, shim_state):
    ctl, clock, prober, layout = make(root)
    ctl.look()
    # A job of the same name that this loop did not submit (the user's own).
    foreign = root / "own.sub"
    foreign.write_text("#!/bin/bash\n#SBATCH --job-name hello-python\nsleep 1\n")
    os.system("sbatch --parsable %s >/dev/null" % foreign)
    (root / ".env").write_text('SERVICE_LIST="hello-python/0"\nFS_SPREAD=no\n')
    ctl.settings = settings.load(layout)
    clock.sleep(10)
    ctl.look()
    cancels = [c for c in calls(shim_state) if c[0] == "scancel"]
    ours = sorted(j["id"] for j in jobs_file(shim_state)[:2])
    assert cancels == [["scancel"] + ours] or sorted(cancels[0][1:]) == ours
    states = {j["id"]: j["state"] for j in jobs_file(shim_state)}
    assert [s for i, s in states.items() if i not in ours] == ["R"]


def test_failed_scancel_is_logged_and_retried(root, shim_state, caplog):
    ctl, clock, prober, layout = make(root)
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    (shim_state / "fail-scancel").write_text("scancel: error: Kill job error on job id: Access/permission denied\n")
    clock.sleep(10)
    ctl.look()
    assert "Access/permission denied" in caplog.text
    assert all(m.cancelled_at is None for m in ctl.snapshot.memory.jobs.values())
    (shim_state / "fail-scancel").unlink()
    clock.sleep(10)
    ctl.look()
    assert len([c for c in calls(shim_state) if c[0] == "scancel"]) == 2
    assert sorted(j["state"] for j in jobs_file(shim_state)) == ["CA", "R"]


def test_memory_survives_a_restart(root, shim_state):
    ctl, clock, prober, layout = make(root)
    ctl.look()
    (shim_state / "calls.log").write_text("")
    again = loop.Controller(layout, settings.load(layout), slurm.Slurm(), clock=clock,
                            probe_all=prober)
    clock.sleep(1)
    again.look()
    assert [c[0] for c in calls(shim_state)] == ["squeue", "sinfo", "scontrol"]     # nothing submitted twice
    assert sorted(again.snapshot.memory.jobs) == sorted(j["id"] for j in jobs_file(shim_state))


def test_sbatch_rejected_backs_off(root, shim_state):
    ctl, clock, prober, layout = make(root)
    (shim_state / "fail-sbatch").write_text("sbatch: error: QOSMaxSubmitJobPerUserLimit\n")
    ctl.look()
    assert len([c for c in calls(shim_state) if c[0] == "sbatch"]) == 1   # not once per missing job
    svc = state.load(layout.state_file).memory.services["hello-python"]
    assert "QOSMaxSubmitJobPerUserLimit" in svc.last_error and svc.failures == 1
    clock.sleep(5)
    ctl.look()
    assert len([c for c in calls(shim_state) if c[0] == "sbatch"]) == 1   # still backing off
    clock.sleep(6)
    ctl.look()
    assert len([c for c in calls(shim_state) if c[0] == "sbatch"]) == 2


def test_bad_comment_is_never_routed(root, shim_state):
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    data = json.loads((shim_state / "jobs.json").read_text())
    data["jobs"][0]["comment"] = "traefik,hello-python,http://{{evil}}:80"
    (shim_state / "jobs.json").write_text(json.dumps(data))
    clock.sleep(10)
    ctl.look()
    assert "servers: []" in open(os.path.join(layout.watch, "hello-python.yml")).read()
    assert "{{" in state.load(layout.state_file).memory.jobs[data["jobs"][0]["id"]].comment_problem


def test_bad_template_keeps_last_good_config(root, shim_state):
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/1"\n')
    routed(ctl, clock, shim_state)
    watch = os.path.join(layout.watch, "hello-python.yml")
    good = open(watch).read()
    with open(os.path.join(layout.services, "hello-python", "hello-python.yml"), "a") as handle:
        handle.write("      loadBalancr: {}\n")
    clock.sleep(10)
    ctl.look()
    assert open(watch).read() == good
    assert "hello-python.yml" in state.load(layout.state_file).service_errors["hello-python"]


def test_an_edited_env_is_picked_up_without_a_restart(root, shim_state):
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n')
    os.utime(str(root / ".env"), (clock.now + 5, clock.now + 5))
    clock.sleep(10)
    ctl.look()
    assert ctl.settings.desired == {"hello-python": 2}
    assert len(jobs_file(shim_state)) == 2
    (root / ".env").write_text('SERVICE_LIST="hello-python/two"\n')   # broken: keep what works
    os.utime(str(root / ".env"), (clock.now + 9, clock.now + 9))
    clock.sleep(10)
    ctl.look()
    assert ctl.settings.desired == {"hello-python": 2} and len(jobs_file(shim_state)) == 2


def test_one_loop_per_root(root, shim_state):
    """fcntl locks are per process, so the second loop must be another process."""
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')
    layout = settings.Layout(str(root))
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    with lock.RootLock(layout.lock_file):
        done = subprocess.run([sys.executable, "-m", "forever_slurm", "--root", str(root), "run", "--once"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env=dict(os.environ, PYTHONPATH=src), timeout=60)
    assert done.returncode == 1
    assert "another forever-slurm loop (pid %d)" % os.getpid() in done.stderr
    assert not [c for c in calls(shim_state) if c[0] == "sbatch"]


def squeues(shim_state):
    return len([c for c in calls(shim_state) if c[0] == "squeue"])


def test_steady_state_looks_at_slurm_once_a_minute_and_at_once_when_a_backend_dies(root, shim_state):
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=60\n')
    routed(ctl, clock, shim_state)
    clock.sleep(60)
    ctl.look()
    (shim_state / "calls.log").write_text("")
    start = clock.now
    scheduler.run_forever(ctl, lambda: clock.now - start >= 600, monotonic=clock, wait=clock.sleep)
    assert squeues(shim_state) <= 11                                   # 10 minutes of nothing happening
    # A job is scancelled by someone else: its server dies, the probe notices, the loop asks Slurm.
    data = json.loads((shim_state / "jobs.json").read_text())
    victim = [j for j in data["jobs"] if j["state"] == "R"][0]
    victim["state"], victim["ended"] = "CA", 0
    (shim_state / "jobs.json").write_text(json.dumps(data))
    prober.dead.add(victim["comment"].split(",")[2])
    (shim_state / "calls.log").write_text("")
    start = clock.now
    scheduler.run_forever(ctl, lambda: any(c[0] == "sbatch" for c in calls(shim_state)) or clock.now - start > 60,
                            monotonic=clock, wait=clock.sleep)
    assert any(c[0] == "sbatch" for c in calls(shim_state)) and clock.now - start <= 10


def test_scale_down_waits_for_requests_in_flight_on_the_drained_backend(root, shim_state):
    ctl, clock, prober, layout = make(root)
    in_flight = {"count": 2}
    asked = []

    def count_inflight(urls):
        asked.append(dict(urls))
        return {job_id: in_flight["count"] for job_id in urls}
    ctl.count_inflight = count_inflight
    routed(ctl, clock, shim_state)
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\nFS_DRAIN_SECONDS=5\n')
    clock.sleep(10)
    ctl.look()
    draining = [job_id for job_id, m in ctl.snapshot.memory.jobs.items() if m.drain_since is not None]
    assert len(draining) == 1 and "weight: 0" in open(os.path.join(layout.watch, "hello-python.yml")).read()
    for _ in range(3):      # well past FS_DRAIN_SECONDS: a stream still flows, so the job stays
        clock.sleep(10)
        ctl.look()
    assert not [c for c in calls(shim_state) if c[0] == "scancel"]
    assert asked[-1] == {draining[0]: ctl.snapshot.memory.jobs[draining[0]].url}
    in_flight["count"] = 0
    clock.sleep(10)
    ctl.look()
    assert [c for c in calls(shim_state) if c[0] == "scancel"] == [["scancel", draining[0]]]


# -- a shared cluster: lost nodes, maintenance windows, refusals ---------------------------------------
def cluster_says(ctl, nodes=None, reservations=()):
    from forever_slurm.systems import slurm_facts
    ctl.slurm.node_problems = lambda: {n: slurm_facts.NodeProblem(n, "drng", "reboot") for n in (nodes or ())}
    ctl.slurm.reservations = lambda: list(reservations)
    ctl.facts = ctl.facts._replace(read_at=None)       # read at the next look


def test_a_drained_node_loses_our_job_at_once_and_gets_no_new_one(root, shim_state):
    ctl, clock, prober, layout = make(root)
    routed(ctl, clock, shim_state)
    node = jobs_file(shim_state)[0]["nodes"]
    cluster_says(ctl, nodes=[node])
    (shim_state / "calls.log").write_text("")
    clock.sleep(10)
    ctl.look()
    sbatch = [c for c in calls(shim_state) if c[0] == "sbatch"]
    assert len(sbatch) == 1 and "--exclude=%s" % node in sbatch[0]
    drained = [j for j in jobs_file(shim_state) if j["nodes"] == node][0]
    assert ctl.snapshot.memory.jobs[drained["id"]].drain_since is not None
    assert "drng" in ctl.snapshot.cluster["unavailable"][node]


def test_before_a_maintenance_a_job_asks_only_the_time_left(root, shim_state):
    from forever_slurm.systems import slurm_facts
    ctl, clock, prober, layout = make(root, 'SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    start = clock.now + 40 * 60
    cluster_says(ctl, reservations=[slurm_facts.Reservation("maint1", start, start + 3600, (), frozenset(
        ["MAINT", "ALL_NODES"]), "INACTIVE")])
    ctl.look()
    [sbatch] = [c for c in calls(shim_state) if c[0] == "sbatch"]
    assert "--time=39" in sbatch                     # 40 min less the margin, in whole minutes
    assert "maint1" in ctl.snapshot.cluster["windows"]["hello-python"]
