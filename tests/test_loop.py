"""loop.Controller against the in-process Slurm (fakes.FakeSlurm), with a fake clock and a fake prober;
`run --once` in a process against the shims."""

import os
import subprocess
import sys

from forever_slurm.core import lock, loop, scheduler, state
from forever_slurm.common import settings

from fakes import make_controller, routed, shim_calls, url_of


def test_first_cycle_submits_then_routes_once_published(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    assert ctl.look()
    # squeue, then (at the first look, and every 10 min) nodes down and reservations, then two jobs
    assert [c[0] for c in fake_slurm.calls] == ["squeue", "sinfo", "scontrol", "sbatch", "sbatch"]
    submitted = fake_slurm.jobs
    assert all(j["chdir"] == layout.slurm_output and j["env_root"] == layout.root for j in submitted)
    watch = os.path.join(layout.watch, "hello-python.yml")
    assert "servers: []" in open(watch).read()
    fake_slurm.publish_all()
    clock.sleep(10)
    assert ctl.look()
    text = open(watch).read()
    urls = [url_of(j) for j in submitted]
    assert all(u in text for u in urls)


def test_steady_state_is_one_squeue_per_cycle(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    ctl.look()
    fake_slurm.publish_all()
    fake_slurm.calls.clear()
    for _ in range(5):
        clock.sleep(10)
        ctl.look()
    assert [c[0] for c in fake_slurm.calls] == ["squeue"] * 5


def test_spread_submits_one_per_cycle_on_distinct_nodes(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/3"\n')
    per_look = []
    for _ in range(3):
        before = len(fake_slurm.commands("sbatch"))
        ctl.look()
        per_look.append(len(fake_slurm.commands("sbatch")) - before)
        clock.sleep(10)
    sbatches = fake_slurm.commands("sbatch")
    assert len(sbatches) == 3
    assert sorted(j["nodes"] for j in fake_slurm.jobs) == ["node1", "node2", "node3"]
    # The fake, like Slurm, may pick a free node anyway: what spreading adds is one job per look,
    # each one told to avoid the nodes taken so far.
    assert per_look == [1, 1, 1] and "--exclude=node1,node2" in sbatches[2]


def test_second_job_spreads_to_another_node(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\n')
    ctl.settings = settings.load(layout)
    clock.sleep(10)
    ctl.look()
    sbatches = fake_slurm.commands("sbatch")
    assert "--exclude=node1" in sbatches[1]
    assert [j["nodes"] for j in fake_slurm.jobs] == ["node1", "node2"]


def test_spread_falls_back_when_every_node_is_excluded(root, fake_slurm):
    fake_slurm.nodes = ["node1"]
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\n')
    ctl.settings = settings.load(layout)
    clock.sleep(10)
    ctl.look()
    assert len(fake_slurm.jobs) == 2
    sbatches = fake_slurm.commands("sbatch")
    assert "--exclude=node1" in sbatches[1] and not any(a.startswith("--exclude") for a in sbatches[2])


def test_slurm_down_is_unknown_not_empty(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    routed(ctl, clock, fake_slurm)
    watch = os.path.join(layout.watch, "hello-python.yml")
    before = open(watch).read()
    fake_slurm.fail["squeue"] = "slurm_load_jobs error: Unable to contact slurm controller\n"
    fake_slurm.calls.clear()
    for _ in range(3):
        clock.sleep(10)
        assert ctl.look() is False
    assert [c[0] for c in fake_slurm.calls] == ["squeue"] * 3      # no sbatch, no scancel
    assert open(watch).read() == before                               # routes kept
    assert ctl.next_look_in() == 40                             # backoff: 10, 20, 40 ...
    assert state.load(layout.state_file).slurm_ok is False
    del fake_slurm.fail["squeue"]
    clock.sleep(40)
    assert ctl.look() is True and ctl.next_look_in() == 10


def test_looks_again_soon_after_submitting(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    assert ctl.next_look_in() == 0               # no look yet: look now
    ctl.look()                                   # submits: the jobs are starting
    assert ctl.next_look_in() == 2
    fake_slurm.publish_all()
    clock.sleep(2)
    ctl.look()                                   # both ready
    assert ctl.next_look_in() == 10
    clock.sleep(40)
    assert ctl.next_look_in() == 10


def test_hanging_squeue_times_out_as_unknown(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    ctl.slurm.timeout = 1
    fake_slurm.hang["squeue"] = 5
    assert ctl.look() is False
    assert not fake_slurm.commands("sbatch")


def test_dead_backend_leaves_the_config_on_a_probe_tick(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    routed(ctl, clock, fake_slurm)
    watch = os.path.join(layout.watch, "hello-python.yml")
    first = [j for j in fake_slurm.jobs][0]
    dead = url_of(first)
    assert dead in open(watch).read()
    prober.dead.add(dead)
    fake_slurm.calls.clear()
    clock.sleep(2)
    ctl.probe_pass()
    assert dead not in open(watch).read()
    assert fake_slurm.calls == []                                    # a tick never calls Slurm


def test_lowering_n_cancels_only_our_jobs(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    ctl.look()
    # A job of the same name that this loop did not submit (the user's own).
    foreign = root / "own.sub"
    foreign.write_text("#!/bin/bash\n#SBATCH --job-name hello-python\nsleep 1\n")
    fake_slurm.sbatch_as_user(foreign)
    (root / ".env").write_text('SERVICE_LIST="hello-python/0"\nFS_SPREAD=no\n')
    ctl.settings = settings.load(layout)
    clock.sleep(10)
    ctl.look()
    cancels = fake_slurm.commands("scancel")
    ours = sorted(j["id"] for j in fake_slurm.jobs[:2])
    assert cancels == [["scancel"] + ours] or sorted(cancels[0][1:]) == ours
    states = {j["id"]: j["state"] for j in fake_slurm.jobs}
    assert [s for i, s in states.items() if i not in ours] == ["R"]


def test_failed_scancel_is_logged_and_retried(root, fake_slurm, caplog):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    fake_slurm.fail["scancel"] = "scancel: error: Kill job error on job id: Access/permission denied\n"
    clock.sleep(10)
    ctl.look()
    assert "Access/permission denied" in caplog.text
    assert all(m.cancelled_at is None for m in ctl.snapshot.memory.jobs.values())
    del fake_slurm.fail["scancel"]
    clock.sleep(10)
    ctl.look()
    assert len(fake_slurm.commands("scancel")) == 2
    assert sorted(j["state"] for j in fake_slurm.jobs) == ["CA", "R"]


def test_memory_survives_a_restart(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    ctl.look()
    fake_slurm.calls.clear()
    again = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                            probe_all=prober)
    clock.sleep(1)
    again.look()
    assert [c[0] for c in fake_slurm.calls] == ["squeue", "sinfo", "scontrol"]     # nothing submitted twice
    assert sorted(again.snapshot.memory.jobs) == sorted(j["id"] for j in fake_slurm.jobs)


def test_sbatch_rejected_backs_off(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    fake_slurm.fail["sbatch"] = "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
    ctl.look()
    assert len(fake_slurm.commands("sbatch")) == 1   # not once per missing job
    svc = state.load(layout.state_file).memory.services["hello-python"]
    assert "QOSMaxSubmitJobPerUserLimit" in svc.last_error and svc.failures == 1
    clock.sleep(5)
    ctl.look()
    assert len(fake_slurm.commands("sbatch")) == 1   # still backing off
    clock.sleep(6)
    ctl.look()
    assert len(fake_slurm.commands("sbatch")) == 2


def test_bad_comment_is_never_routed(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    job_id = fake_slurm.jobs[0]["id"]
    fake_slurm.set_comment(job_id, "traefik,hello-python,http://{{evil}}:80")
    clock.sleep(10)
    ctl.look()
    assert "servers: []" in open(os.path.join(layout.watch, "hello-python.yml")).read()
    assert "{{" in state.load(layout.state_file).memory.jobs[job_id].comment_problem


def test_bad_template_keeps_last_good_config(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    routed(ctl, clock, fake_slurm)
    watch = os.path.join(layout.watch, "hello-python.yml")
    good = open(watch).read()
    with open(os.path.join(layout.services, "hello-python", "hello-python.yml"), "a") as handle:
        handle.write("      loadBalancr: {}\n")
    clock.sleep(10)
    ctl.look()
    assert open(watch).read() == good
    assert "hello-python.yml" in state.load(layout.state_file).service_errors["hello-python"]


def test_an_edited_env_is_picked_up_without_a_restart(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    ctl.look()
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n')
    os.utime(str(root / ".env"), (clock.now + 5, clock.now + 5))
    clock.sleep(10)
    ctl.look()
    assert ctl.settings.desired == {"hello-python": 2}
    assert len(fake_slurm.jobs) == 2
    (root / ".env").write_text('SERVICE_LIST="hello-python/two"\n')   # broken: keep what works
    os.utime(str(root / ".env"), (clock.now + 9, clock.now + 9))
    clock.sleep(10)
    ctl.look()
    assert ctl.settings.desired == {"hello-python": 2} and len(fake_slurm.jobs) == 2


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
    assert not [c for c in shim_calls(shim_state) if c[0] == "sbatch"]


def test_steady_state_looks_at_slurm_once_a_minute_and_at_once_when_a_backend_dies(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm,
                                                'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=60\n')
    routed(ctl, clock, fake_slurm)
    clock.sleep(60)
    ctl.look()
    fake_slurm.calls.clear()
    start = clock.now
    scheduler.run_forever(ctl, lambda: clock.now - start >= 600, monotonic=clock, wait=clock.sleep)
    assert len(fake_slurm.commands("squeue")) <= 11                                   # 10 minutes of nothing happening
    # A job is scancelled by someone else: its server dies, the probe notices, the loop asks Slurm.
    victim = fake_slurm.job([j for j in fake_slurm.jobs if j["state"] == "R"][0]["id"])
    victim["state"], victim["ended"] = "CA", 0
    prober.dead.add(victim["comment"].split(",")[2])
    fake_slurm.calls.clear()
    start = clock.now
    scheduler.run_forever(ctl, lambda: any(c[0] == "sbatch" for c in fake_slurm.calls) or clock.now - start > 60,
                            monotonic=clock, wait=clock.sleep)
    assert any(c[0] == "sbatch" for c in fake_slurm.calls) and clock.now - start <= 10


def test_scale_down_waits_for_requests_in_flight_on_the_drained_backend(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    in_flight = {"count": 2}
    asked = []

    def count_inflight(urls):
        asked.append(dict(urls))
        return {job_id: in_flight["count"] for job_id in urls}
    ctl.count_inflight = count_inflight
    routed(ctl, clock, fake_slurm)
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\nFS_DRAIN_SECONDS=5\n')
    clock.sleep(10)
    ctl.look()
    draining = [job_id for job_id, m in ctl.snapshot.memory.jobs.items() if m.drain_since is not None]
    assert len(draining) == 1 and "weight: 0" in open(os.path.join(layout.watch, "hello-python.yml")).read()
    for _ in range(3):      # well past FS_DRAIN_SECONDS: a stream still flows, so the job stays
        clock.sleep(10)
        ctl.look()
    assert not fake_slurm.commands("scancel")
    assert asked[-1] == {draining[0]: ctl.snapshot.memory.jobs[draining[0]].url}
    in_flight["count"] = 0
    clock.sleep(10)
    ctl.look()
    assert fake_slurm.commands("scancel") == [["scancel", draining[0]]]



# -- a shared cluster: lost nodes, maintenance windows, refusals ---------------------------------------
def cluster_says(ctl, nodes=None, reservations=()):
    from forever_slurm.systems import slurm_facts
    ctl.slurm.node_problems = lambda: {n: slurm_facts.NodeProblem(n, "drng", "reboot") for n in (nodes or ())}
    ctl.slurm.reservations = lambda: list(reservations)
    ctl.facts = ctl.facts._replace(read_at=None)       # read at the next look


def test_a_drained_node_loses_our_job_at_once_and_gets_no_new_one(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    routed(ctl, clock, fake_slurm)
    node = fake_slurm.jobs[0]["nodes"]
    cluster_says(ctl, nodes=[node])
    fake_slurm.calls.clear()
    clock.sleep(10)
    ctl.look()
    sbatch = fake_slurm.commands("sbatch")
    assert len(sbatch) == 1 and "--exclude=%s" % node in sbatch[0]
    drained = [j for j in fake_slurm.jobs if j["nodes"] == node][0]
    assert ctl.snapshot.memory.jobs[drained["id"]].drain_since is not None
    assert "drng" in ctl.snapshot.cluster["unavailable"][node]


def test_before_a_maintenance_a_job_asks_only_the_time_left(root, fake_slurm):
    from forever_slurm.systems import slurm_facts
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    start = clock.now + 40 * 60
    cluster_says(ctl, reservations=[slurm_facts.Reservation("maint1", start, start + 3600, (), frozenset(
        ["MAINT", "ALL_NODES"]), "INACTIVE")])
    ctl.look()
    [sbatch] = fake_slurm.commands("sbatch")
    assert "--time=39" in sbatch                     # 40 min less the margin, in whole minutes
    assert "maint1" in ctl.snapshot.cluster["windows"]["hello-python"]
