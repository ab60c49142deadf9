"""core/absorb, planner, outcomes: the plan as tables of situations and expected decisions (no fakes needed)."""

import pytest

from forever_slurm.core import absorb, model, outcomes, planner
from forever_slurm.systems import traefik
from forever_slurm.systems.slurm import Job

POLICY = model.Policy(surge=1, drain_seconds=20, renew_lead=None, renew_margin=60, default_startup=60)


def job(job_id, state="R", name="svc", node="node1", left=3600, used=3600, comment=None, reason="None"):
    if comment is None:
        comment = "traefik,%s,http://%s:%s" % (name, node or "h", 40000 + int(job_id)) if state == "R" else ""
    return Job(str(job_id), state, name, node if state == "R" else "", left, used, reason, comment)


def ready_memory(jobs, now=1000.0, ready=True):
    mem = {}
    for j in jobs:
        url, _ = absorb.parse_comment(j.comment, j.name)
        mem[j.job_id] = model.JobMemory(service=j.name, submitted_at=now - 100, seen_at=now - 90,
                                     running_since=now - 80 if j.running else None, url=url or "",
                                     ready_since=now - 70 if (ready and j.running and url) else None,
                                     ever_ready=bool(ready and j.running and url))
    return model.Memory(jobs=mem, services={})


def kinds(actions):
    return [type(a).__name__ for a in actions]


@pytest.mark.parametrize("comment,url,problem", [
    ("traefik,svc,http://node7:40123", "http://node7:40123", ""),
    ("traefik,svc,https://n-1.cluster.org:443/", "https://n-1.cluster.org:443", ""),
    ("", None, ""),
    ("traefik,other,http://node7:1", None, "names service 'other'"),
    ("traefik,svc,http://node7", None, "not http(s)://host:port"),
    ("traefik,svc,http://no de:80", None, "not http(s)://host:port"),
    ("traefik,svc,http://{{ .Env }}:80", None, "'{{'"),
    ("traefik,svc,http://node:99999", None, "not http(s)://host:port"),
    ("traefik,svc,ftp://node:21", None, "not http(s)://host:port"),
    ("some comment", None, "not traefik,<service>,<url>"),
])
def test_parse_comment(comment, url, problem):
    got_url, got_problem = absorb.parse_comment(comment, "svc")
    assert got_url == url
    assert problem in got_problem and bool(problem) == bool(got_problem)


@pytest.mark.parametrize("situation,desired,jobs,expect", [
    ("nothing yet: one per cycle, to spread", 2, [], ["Submit"]),
    ("a large gap is filled at once", 6, [], ["Submit"] * 6),
    ("one missing", 2, [job(1)], ["Submit"]),
    ("pending counts", 2, [job(1), job(2, "PD")], []),
    ("exactly N", 2, [job(1), job(2, node="node2")], []),
    ("completing does not count", 1, [job(1, "CG")], ["Submit"]),
    ("another name never counts", 1, [job(1, name="svc-extra")], ["Submit"]),
    ("user lowered N: pending cancelled first", 1, [job(1), job(2, "PD")], ["Cancel"]),
    ("N = 0 drains ours first (they may be streaming)", 0, [job(1), job(2, node="node2")], []),
    ("N = 0 cancels ours that serve nothing", 0, [job(1, "PD"), job(2, "PD")], ["Cancel", "Cancel"]),
])
def test_counting(situation, desired, jobs, expect):
    memory = ready_memory([j for j in jobs if j.name == "svc"])
    plan = planner.plan({"svc": desired}, jobs, memory, 1000.0, POLICY)
    assert sorted(kinds(plan.actions)) == sorted(expect), situation


def test_surplus_cancels_pending_first_then_drains_the_newest():
    jobs = [job(1), job(2, node="node2"), job(3, "PD")]
    plan = planner.plan({"svc": 1}, jobs, ready_memory(jobs), 1000.0, POLICY)
    assert [a.job_id for a in plan.actions] == ["3"]
    assert plan.memory.jobs["2"].drain_since == 1000.0 and plan.memory.jobs["1"].drain_since is None
    assert [s.weight for s in plan.routes["svc"]] == [1, 0]


def test_scale_down_cancels_the_drained_job_once_its_streams_end():
    jobs = [job(1), job(2, node="node2")]
    memory = planner.plan({"svc": 1}, jobs, ready_memory(jobs), 1000.0, POLICY).memory
    # Past FS_DRAIN_SECONDS with a stream still flowing: kept, at weight 0, nothing new submitted.
    busy = planner.plan({"svc": 1}, jobs, memory, 1030.0, POLICY, inflight={"2": 1})
    assert busy.actions == [] and [s.weight for s in busy.routes["svc"]] == [1, 0]
    done = planner.plan({"svc": 1}, jobs, busy.memory, 1031.0, POLICY, inflight={"2": 0})
    assert done.actions == [model.Cancel("2", "svc", "drained for fewer instances")]
    assert done.memory.services.get("svc", model.ServiceMemory()).drains == ()     # not before it happened
    assert outcomes.record_cancelled(done.memory, ["2"], 1031.0).services["svc"].drains == (31.0,)
    assert [s.url for s in done.routes["svc"]] == ["http://node1:40001"]


def test_renewal_waits_for_the_stream_on_the_drained_job():
    jobs = [job(1, left=100), job(2, node="node2")]
    memory = ready_memory(jobs)
    memory = memory._replace(jobs=dict(memory.jobs, **{"1": memory.jobs["1"]._replace(drain_since=1000.0)}))
    busy = planner.plan({"svc": 1}, jobs, memory, 1100.0, POLICY, inflight={"1": 2})
    assert not [a for a in busy.actions if isinstance(a, model.Cancel)]
    unknown = planner.plan({"svc": 1}, jobs, memory, 1100.0, POLICY)
    assert model.Cancel("1", "svc", "drained for renewal") in unknown.actions


def test_renew_lead_makes_room_for_the_longest_measured_drain():
    policy = POLICY._replace(drain_seconds=20, renew_margin=60)
    quick = model.ServiceMemory(startup=(30.0,))
    assert planner.renew_lead(quick, policy) == 30 + 20 + 60
    streaming = quick._replace(drains=(12.0, 95.0, 40.0))
    assert planner.renew_lead(streaming, policy) == 30 + 95 + 60
    assert planner.renew_lead(streaming, policy._replace(renew_lead=100)) == 100


DRAINING = model.JobMemory(service="svc", drain_since=1000.0)


@pytest.mark.parametrize("situation,inflight,now,time_left,finished", [
    ("before FS_DRAIN_SECONDS, idle: Traefik may not have applied weight 0 yet", 0, 1010.0, 3000, False),
    ("before FS_DRAIN_SECONDS, unknown", None, 1019.9, 3000, False),
    ("after FS_DRAIN_SECONDS, unknown: the fixed drain time is the fallback", None, 1020.0, 3000, True),
    ("after FS_DRAIN_SECONDS, nothing in flight", 0, 1020.0, 3000, True),
    ("a stream still flows", 1, 1300.0, 3000, False),
    ("a stream still flows, time left unknown", 3, 1599.0, None, False),
    ("a stream still flows at FS_DRAIN_MAX_SECONDS", 1, 1600.0, 3000, True),
    ("a stream still flows, the job is at its own end", 1, 1100.0, 0, True),
    ("a stream still flows, a little time left", 1, 1100.0, 5, False),
])
def test_drain_finished(situation, inflight, now, time_left, finished):
    policy = POLICY._replace(drain_seconds=20, drain_max_seconds=600)
    assert planner.drain_finished(DRAINING, inflight, now, policy, time_left) is finished, situation


def test_without_spread_all_missing_jobs_go_at_once():
    plan = planner.plan({"svc": 3}, [], model.empty_memory(), 1000.0, POLICY._replace(spread=False))
    assert kinds(plan.actions) == ["Submit"] * 3


def test_spread_excludes_nodes_already_running_the_service():
    jobs = [job(1, node="node1"), job(2, node="node2", name="other")]
    plan = planner.plan({"svc": 2, "other": 1}, jobs, ready_memory(jobs), 1000.0, POLICY)
    assert plan.actions == [model.Submit("svc", ("node1",), "missing")]
    plan = planner.plan({"svc": 2, "other": 1}, jobs, ready_memory(jobs), 1000.0, POLICY._replace(spread=False))
    assert plan.actions == [model.Submit("svc", (), "missing")]


def test_expected_submission_counts_until_seen_or_expired():
    memory = outcomes.record_submitted(model.empty_memory(), "svc", "77", now=1000.0)
    plan = planner.plan({"svc": 1}, [], memory, 1010.0, POLICY)
    assert plan.actions == []                       # 77 is expected: no double submission
    memory, events = absorb.absorb(memory, [], 1000.0 + POLICY.expect_timeout + 1, POLICY)
    assert "77" not in memory.jobs and "never appeared" in events[0]
    assert memory.services["svc"].failures == 1


def test_stale_observation_submits_and_cancels_nothing():
    jobs = [job(1), job(2, "PD"), job(3, "PD")]
    plan = planner.plan({"svc": 5}, jobs, ready_memory(jobs), 1000.0, POLICY, fresh=False)
    assert plan.actions == []
    plan = planner.plan({"svc": 1}, jobs, ready_memory(jobs), 1000.0, POLICY, fresh=False)
    assert plan.actions == []


def test_routes_only_ready_jobs_with_valid_urls():
    jobs = [job(1), job(2, node="node2"), job(3, "PD"), job(4, node="node3", comment="traefik,svc,junk")]
    memory = ready_memory(jobs)
    memory.jobs["2"] = memory.jobs["2"]._replace(ready_since=None)
    plan = planner.plan({"svc": 4}, jobs, memory, 1000.0, POLICY)
    assert plan.routes == {"svc": [traefik.Server("http://node1:40001", 1)]}


def test_no_backends_gives_an_empty_list_not_a_missing_service():
    plan = planner.plan({"svc": 2}, [], model.empty_memory(), 1000.0, POLICY)
    assert plan.routes == {"svc": []}


def test_backoff_blocks_submission_until_next_try():
    memory = outcomes.record_submit_failed(model.empty_memory(), "svc", "sbatch failed: QOS", 1000.0, POLICY)
    assert memory.services["svc"].next_try == 1000.0 + POLICY.backoff_base
    assert planner.plan({"svc": 1}, [], memory, 1005.0, POLICY).actions == []
    assert kinds(planner.plan({"svc": 1}, [], memory, 1011.0, POLICY).actions) == ["Submit"]


def test_backoff_doubles_to_five_minutes():
    assert [outcomes.backoff_delay(n, POLICY) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_crash_soon_after_start_counts_and_healthy_end_does_not():
    crashed = model.JobMemory(service="svc", submitted_at=900, seen_at=905, running_since=910,
                           url="http://n:1", ready_since=912, ever_ready=True)
    old = model.JobMemory(service="svc", submitted_at=0, seen_at=5, running_since=10,
                       url="http://n:2", ready_since=12, ever_ready=True)
    memory = model.Memory({"1": crashed, "2": old}, {})
    ended = [Job("1", "F", "svc", "n", None, 90, "None", ""), Job("2", "CD", "svc", "n", None, 990, "None", "")]
    memory, events = absorb.absorb(memory, ended, 1000.0, POLICY)
    assert memory.services["svc"].failures == 1
    assert any("ended (F) 90s after it started" in e for e in events)
    assert any("job 2 of svc ended (CD) after 990s" in e for e in events)


def test_crash_count_resets_after_ten_healthy_minutes():
    jobs = [job(1)]
    memory = ready_memory(jobs, now=1000.0)
    memory.jobs["1"] = memory.jobs["1"]._replace(ready_since=1000.0 - POLICY.backoff_reset)
    memory = memory._replace(services={"svc": model.ServiceMemory(failures=3, next_try=0, last_error="x")})
    plan = planner.plan({"svc": 1}, jobs, memory, 1000.0, POLICY)
    assert plan.memory.services["svc"].failures == 0


def test_how_a_job_ended_decides_whether_it_was_a_crash():
    def gone(state, lived=30, ever_ready=True):
        m = model.JobMemory(service="svc", submitted_at=900, seen_at=905, running_since=1000 - lived,
                         url="http://n:1", ever_ready=ever_ready)
        ended = [Job("1", state, "svc", "node1", None, lived, "None", "")] if state else []
        memory, events = absorb.absorb(model.Memory({"1": m}, {}), ended, 1000.0, POLICY)
        return memory.services.get("svc", model.ServiceMemory()).failures, events[0]

    assert gone("CA")[0] == 0 and "not counted as a crash" in gone("CA")[1]    # scancel by someone
    assert gone("TO")[0] == 0                                                  # time limit
    assert gone("NF")[0] == 0                                                  # node failure
    assert gone("F")[0] == 1 and "(F)" in gone("F")[1]                         # the server failed
    assert gone("CD")[0] == 1                                                  # exited by itself, soon
    assert gone("CD", lived=3600)[0] == 0
    assert gone("")[0] == 0                                                    # purged: it was ready
    assert gone("", ever_ready=False)[0] == 1                                  # purged, never ready
    assert gone("F", lived=3600, ever_ready=False)[0] == 1                     # never ready


def test_publish_timeout_counts_as_a_crash_once():
    j = job(1, comment="")
    memory = model.Memory({"1": model.JobMemory("svc", seen_at=0, running_since=0)}, {})
    later = POLICY.publish_timeout + 1
    memory, events = absorb.absorb(memory, [j], later, POLICY)
    memory, events2 = absorb.absorb(memory, [j], later + 10, POLICY)
    assert memory.services["svc"].failures == 1 and events and not events2


def test_probes_make_ready_and_unready():
    jobs = [job(1)]
    memory = ready_memory(jobs, ready=False)
    memory, events = absorb.apply_probes(memory, {"1": model.ProbeResult(True)}, 1000.0, POLICY)
    assert memory.jobs["1"].ready_since == 1000.0 and "ready" in events[0]
    assert memory.services["svc"].startup == (100.0,)            # submitted at 900
    memory, _ = absorb.apply_probes(memory, {"1": model.ProbeResult(False, "HTTP 500")}, 1001.0, POLICY)
    assert memory.jobs["1"].ready_since == 1000.0                 # one slow answer is tolerated
    memory, events = absorb.apply_probes(memory, {"1": model.ProbeResult(False, "HTTP 500")}, 1002.0, POLICY)
    assert memory.jobs["1"].ready_since is None and "removed from Traefik" in events[0]


def test_connection_refused_unreadies_at_once():
    jobs = [job(1)]
    memory, _ = absorb.apply_probes(ready_memory(jobs), {"1": model.ProbeResult(False, "refused", refused=True)},
                                1000.0, POLICY)
    assert memory.jobs["1"].ready_since is None


class TestRenewal:
    """Two jobs that started together approach their time limit: both are replaced at once, no gap."""

    def lead(self):
        return planner.renew_lead(model.ServiceMemory(startup=(5.0,)), POLICY)   # 5 + 20 + 60 = 85

    def test_lead_time_from_measured_startup(self):
        assert self.lead() == 85
        assert planner.renew_lead(model.ServiceMemory(), POLICY._replace(renew_lead=42)) == 42
        assert planner.renew_lead(model.ServiceMemory(), POLICY) == 60 + 20 + 60

    def test_sequence(self):
        """Both reach their renewal together: both are replaced at once (neither waits for the other's
        replacement, which cut the second one's streams), each is drained once the replacements carry
        the service, then cancelled."""
        memory = ready_memory([job(1), job(2, node="node2")])
        memory = memory._replace(services={"svc": model.ServiceMemory(startup=(5.0,))})
        now = 1000.0
        # 80 s left, inside the 85 s lead: a replacement for each, nothing drained yet.
        jobs = [job(1, left=80), job(2, node="node2", left=80)]
        plan = planner.plan({"svc": 2}, jobs, memory, now, POLICY)
        assert plan.actions == [model.Submit("svc", ("node1", "node2"), "renewal")] * 2
        assert all(s.weight == 1 for s in plan.routes["svc"])
        memory = outcomes.record_submitted(plan.memory, "svc", "3", now)
        memory = outcomes.record_submitted(memory, "svc", "4", now)
        # The replacements run and are ready: both old jobs drain (weight 0), 2 live backends.
        now += 5
        jobs = [job(1, left=75), job(2, node="node2", left=75), job(3, node="node3"), job(4, node="node3")]
        memory, _ = absorb.absorb(memory, jobs, now, POLICY)
        memory, _ = absorb.apply_probes(memory, {"3": model.ProbeResult(True), "4": model.ProbeResult(True)},
                                        now, POLICY)
        plan = planner.plan({"svc": 2}, jobs, memory, now, POLICY)
        assert plan.actions == []
        weights = {s.url: s.weight for s in plan.routes["svc"]}
        assert sorted(weights.values()) == [0, 0, 1, 1]
        memory = plan.memory
        # After the drain time both are cancelled; nothing more is submitted.
        now += POLICY.drain_seconds
        jobs = [job(1, left=55), job(2, node="node2", left=55), job(3, node="node3"), job(4, node="node3")]
        plan = planner.plan({"svc": 2}, jobs, memory, now, POLICY)
        assert kinds(plan.actions) == ["Cancel", "Cancel"]
        assert {a.job_id for a in plan.actions} == {"1", "2"}
        assert sum(1 for s in plan.routes["svc"] if s.weight > 0) == 2

    def test_no_surge_waits_for_the_old_job(self):
        jobs = [job(1, left=30)]
        plan = planner.plan({"svc": 1}, jobs, ready_memory(jobs), 1000.0, POLICY._replace(surge=0))
        assert plan.actions == []

    def test_last_backend_is_not_drained_into_a_503(self):
        jobs = [job(1, left=10)]
        plan = planner.plan({"svc": 1}, jobs, ready_memory(jobs), 1000.0, POLICY)
        assert plan.routes["svc"] == [traefik.Server("http://node1:40001", 1)]


def test_signal_warning_widens_the_lead():
    svc = model.ServiceMemory(startup=(5.0,))
    assert planner.renew_lead(svc, POLICY, warning_seconds=60) == 85 + 120
    assert planner.renew_lead(svc, POLICY._replace(renew_lead=30), warning_seconds=60) == 150


def views_for(jobs, memory, desired=None, now=1000.0, policy=POLICY):
    return planner.service_views(desired or {"svc": 1}, jobs, memory, now, policy, now)


@pytest.mark.parametrize("situation,jobs,change,expect_seconds,why", [
    ("nothing due: the steady interval", [job(1, left=36000)], {}, 60, "steady"),
    ("a renewal comes first", [job(1, left=200)], {}, 200 - 140, "renewal"),
    ("renewing, its replacement missing: at once", [job(1, left=100)], {}, 0, "1"),
    ("a drain ends", [job(1, left=36000), job(2, left=36000, node="node2")], {"drain_since": 990.0}, 10, "drain"),
    ("a scancel retry", [job(1, left=36000), job(2, left=36000, node="node2")],
     {"cancel_failures": 1, "cancel_retry_at": 1007.0}, 7, "scancel"),
])
def test_next_look(situation, jobs, change, expect_seconds, why):
    memory = ready_memory(jobs)
    memory.jobs["1"] = memory.jobs["1"]._replace(**change)
    plan = planner.plan({"svc": 1}, jobs, memory, 1000.0, POLICY, fresh=False, steady=60)
    assert (round(plan.next_look), plan.why.split()[0]) == (expect_seconds, why), situation


def test_renewing_with_its_replacement_on_the_way_looks_only_for_its_start():
    jobs = [job(1, left=100), job(2, state="PD")]       # the replacement was submitted 100 s ago
    plan = planner.plan({"svc": 1}, jobs, ready_memory(jobs), 1000.0, POLICY, fresh=False, steady=60)
    assert (plan.next_look, plan.why) == (50.0, "start of a job of svc")


@pytest.mark.parametrize("startups, age, expect", [
    ((), 10, planner.FOLLOW_UP_DELAY),              # nothing known: every 2 s for 30 s
    ((3.0, 2.0), 10, planner.FOLLOW_UP_DELAY),      # an idle cluster: the same
    ((3.0, 2.0), 40, 20.0),                         # then every half its age
    ((150.0, 160.0), 10, 10.0),                     # a busy queue: 15 looks over the quickest start
    ((150.0, 160.0), 149, 10.0),
    ((150.0, 160.0), 0.5, 10.0),
])
def test_a_submission_is_looked_for_as_often_as_this_services_starts_make_worth_it(startups, age, expect):
    """bench C1: replacements waiting ~150 s in a busy queue were looked for every 2 s from their
    submission (18 squeue calls a minute while renewing)."""
    jobs = [job(1, left=36000)]
    memory = ready_memory(jobs)
    memory.jobs["2"] = model.JobMemory(service="svc", submitted_at=1000.0 - age)
    memory = memory._replace(services={"svc": model.ServiceMemory(startup=startups)})
    plan = planner.plan({"svc": 2}, jobs, memory, 1000.0, POLICY, fresh=False, steady=60)
    assert (plan.next_look, plan.why) == (expect, "start of a job of svc")


def test_next_look_waits_for_a_backoff_only_when_something_is_missing():
    memory = outcomes.record_submit_failed(model.empty_memory(), "svc", "QOS", 1000.0, POLICY)
    plan = planner.plan({"svc": 1}, [], memory, 1000.0, POLICY, fresh=False, steady=60)
    assert (plan.next_look, plan.why) == (10.0, "backoff of svc ends")
    jobs = [job(1, left=36000)]
    memory = ready_memory(jobs)._replace(services=memory.services)
    assert planner.plan({"svc": 1}, jobs, memory, 1000.0, POLICY, fresh=False, steady=60).why == "steady"


def test_scaled_to_zero_every_backend_drains_and_new_requests_get_503_not_a_draining_backend():
    jobs = [job(1), job(2, node="node2")]
    plan = planner.plan({"svc": 0}, jobs, ready_memory(jobs), 1000.0, POLICY)
    assert [s.weight for s in plan.routes["svc"]] == [0, 0] and plan.actions == []
    plan = planner.plan({"svc": 1}, [job(1, left=10)], ready_memory([job(1)]), 1000.0, POLICY)
    assert [s.weight for s in plan.routes["svc"]] == [1]        # wanted: the last backend keeps serving


def test_spreading_waits_for_the_last_submission_to_have_a_node():
    """Where a job runs is known once it runs: the next of a small gap waits for it, so that it can
    avoid its node (submitting both at once put them on one node on a loaded machine)."""
    jobs = [job(1, state="PD")]
    memory = ready_memory(jobs)
    memory.jobs["1"] = memory.jobs["1"]._replace(submitted_at=995.0)
    assert planner.plan({"svc": 2}, jobs, memory, 1000.0, POLICY).actions == []
    placed = [job(1)]
    plan = planner.plan({"svc": 2}, placed, ready_memory(placed), 1000.0, POLICY)
    assert plan.actions == [model.Submit("svc", ("node1",), "missing")]
    # A job pending for longer than spread_patience no longer holds the next one back.
    memory.jobs["1"] = memory.jobs["1"]._replace(submitted_at=1000.0 - POLICY.spread_patience - 1)
    assert planner.plan({"svc": 2}, jobs, memory, 1000.0, POLICY).actions == [model.Submit("svc", (), "missing")]


class TestSharedCluster:
    """Jobs that Slurm requeues, suspends or cuts short (issue 24): not counted, replaced at once."""

    def two_running(self):
        jobs = [job(1), job(2, node="node2")]
        memory, _ = absorb.absorb(ready_memory(jobs), jobs, 1000.0, POLICY)
        return memory

    @pytest.mark.parametrize("state, reason, word", [("PD", "BeginTime", "requeued"), ("S", "None", "suspended")])
    def test_a_requeued_or_suspended_job_is_not_counted_and_is_replaced_now(self, state, reason, word):
        memory = self.two_running()
        jobs = [job(1, state=state, reason=reason), job(2, node="node2")]
        memory, events = absorb.absorb(memory, jobs, 1010.0, POLICY)
        assert any(word in e and "job 1 " in e for e in events)
        assert model.phase(memory.jobs["1"], state) == model.Phase.HELD
        plan = planner.plan({"svc": 2}, jobs, memory, 1010.0, POLICY)
        assert kinds(plan.actions) == ["Submit"]
        assert [s.url for s in plan.routes["svc"]] == ["http://node2:40002"]
        # Both run again: whichever is one too many is drained, then cancelled.
        memory = outcomes.record_submitted(plan.memory, "svc", "3", 1010.0)
        jobs = [job(1), job(2, node="node2"), job(3, node="node3")]
        memory, events = absorb.absorb(memory, jobs, 1200.0, POLICY)
        assert any("job 1 of svc started" in e for e in events)
        memory, _ = absorb.apply_probes(memory, {i: model.ProbeResult(True) for i in "123"}, 1200.0, POLICY)
        plan = planner.plan({"svc": 2}, jobs, memory, 1200.0, POLICY)
        assert sorted(s.weight for s in plan.routes["svc"]) == [0, 1, 1]

    def test_a_job_requeued_soon_after_it_was_submitted_does_not_hold_back_its_replacement(self):
        """bench C4: a node went down 10 s after its job started; Slurm requeued the job, and the
        spreading rule took it for a submission still being placed, so the replacement waited the
        whole spread_patience (58 s) instead of going at once."""
        jobs = [job(1), job(2, node="node2")]
        memory, _ = absorb.absorb(ready_memory(jobs), jobs, 1000.0, POLICY)
        memory.jobs["1"] = memory.jobs["1"]._replace(submitted_at=995.0)
        jobs = [job(1, state="PD", reason="BeginTime"), job(2, node="node2")]
        memory, _ = absorb.absorb(memory, jobs, 1005.0, POLICY)
        plan = planner.plan({"svc": 2}, jobs, memory, 1005.0, POLICY)
        assert kinds(plan.actions) == ["Submit"]

    def test_a_job_whose_end_moves_earlier_is_drained_and_replaced_at_once(self):
        memory = self.two_running()
        assert memory.jobs["1"].ends_at == 1000.0 + 3600
        jobs = [job(1, left=60), job(2, node="node2")]          # preempted: GraceTime 60 s
        memory, events = absorb.absorb(memory, jobs, 1010.0, POLICY)
        assert any("moved its end" in e for e in events)
        plan = planner.plan({"svc": 2}, jobs, memory, 1010.0, POLICY)
        assert plan.actions == [model.Submit("svc", ("node1", "node2"), "renewal")]
        assert {s.url: s.weight for s in plan.routes["svc"]} == {"http://node1:40001": 0, "http://node2:40002": 1}

    def test_an_end_that_only_jitters_is_not_cut_short(self):
        memory = self.two_running()
        jobs = [job(1, left=3600 - 10 - 3), job(2, node="node2", left=3600 - 10)]
        memory, events = absorb.absorb(memory, jobs, 1010.0, POLICY)
        assert events == [] and memory.jobs["1"].cut_short_at is None


@pytest.mark.parametrize("instances", [1, 8, 64])
def test_the_renewal_lead_does_not_grow_with_the_instances(instances):
    svc = model.ServiceMemory(startup=(30.0, 40.0, 300.0), drains=(25.0,))
    jobs = [job(i, node="node%d" % i) for i in range(1, instances + 1)]
    views = planner.service_views({"svc": instances}, jobs, ready_memory(jobs)._replace(services={"svc": svc}),
                                  1000.0, POLICY, 1000.0)
    assert views["svc"].lead == 300 + 25 + 60


def test_jobs_scancel_stopped_take_no_room_from_their_replacements():
    """A scaled-down service woken again: its cancelled jobs are still in the last look (leaving
    squeue); the planner must not wait a steady interval for them to go (a wake waited 48 s)."""
    jobs = [job(1), job(2, node="node2")]
    memory = ready_memory(jobs)
    memory = outcomes.record_cancelled(memory, ["1", "2"], 990.0)
    plan = planner.plan({"svc": 1}, jobs, memory, 1000.0, POLICY, fresh=False)
    assert (plan.next_look, plan.why) == (0.0, "1 instance(s) of svc missing")
    assert kinds(planner.plan({"svc": 1}, jobs, memory, 1000.0, POLICY).actions) == ["Submit"]


def test_a_job_that_entered_its_renewal_stays_renewed_when_the_lead_shrinks():
    """The lead is learnt from start-ups as they are measured: a job renewed under a longer lead must
    not count again as a keeper under a shorter one (its replacement would be cancelled as surplus,
    then submitted again: 58 of 64 replacements were, in the simulated renewal)."""
    jobs = [job(1, left=200)]
    memory = ready_memory(jobs)._replace(services={"svc": model.ServiceMemory(startup=(150.0,))})
    plan = planner.plan({"svc": 1}, jobs, memory, 1000.0, POLICY)          # lead 150 + 20 + 60 = 230
    assert kinds(plan.actions) == ["Submit"]
    memory = outcomes.record_submitted(plan.memory, "svc", "2", 1000.0)
    memory = memory._replace(services={"svc": model.ServiceMemory(startup=(5.0,))})    # lead now 85
    jobs = [job(1, left=190), job(2, state="PD")]
    plan = planner.plan({"svc": 1}, jobs, memory, 1010.0, POLICY)
    assert not [a for a in plan.actions if isinstance(a, model.Cancel)]


def test_a_lead_longer_than_half_a_job_renews_it_at_half_its_time_not_as_soon_as_it_starts():
    """bench C5: replacements that waited out a maintenance made the lead (289 s) longer than the
    3-minute jobs; each new job was renewed as soon as it ran, 16 sbatch in 90 s."""
    svc = model.ServiceMemory(startup=(224.0, 224.0))
    fresh = [job(1, left=175, used=5), job(2, left=175, used=5, node="node2")]
    memory = ready_memory(fresh)._replace(services={"svc": svc})
    plan = planner.plan({"svc": 2}, fresh, memory, 1000.0, POLICY, fresh=False, steady=60)
    assert plan.actions == [] and (plan.next_look, plan.why) == (60.0, "steady")     # 175 - 90 = 85 s
    half = [job(1, left=89, used=91), job(2, left=175, used=5, node="node2")]
    plan = planner.plan({"svc": 2}, half, ready_memory(half)._replace(services={"svc": svc}), 1000.0, POLICY)
    assert [(a.reason, a.service) for a in plan.actions] == [("renewal", "svc")]
    long_jobs = [job(1, left=3000, used=600)]
    assert planner.job_lead(289.0, long_jobs[0]) == 289.0


def test_a_wait_for_a_maintenance_or_a_node_is_no_start_up_sample():
    memory = outcomes.record_submitted(model.empty_memory(), "svc", "7", 1000.0)
    waiting = [job(7, state="PD", reason="ReqNodeNotAvail, Reserved for maintenance")]
    memory, _ = absorb.absorb(memory, waiting, 1010.0, POLICY)
    assert memory.jobs["7"].not_queued
    running = [job(7, used=1)]
    memory, _ = absorb.absorb(memory, running, 1300.0, POLICY)
    memory, _ = absorb.apply_probes(memory, {"7": model.ProbeResult(True)}, 1301.0, POLICY)
    assert memory.jobs["7"].ready_since == 1301.0 and memory.services.get("svc", model.ServiceMemory()).startup == ()
    # A wait for its turn (Priority, Resources) is one.
    memory = outcomes.record_submitted(model.empty_memory(), "svc", "8", 1000.0)
    memory, _ = absorb.absorb(memory, [job(8, state="PD", reason="Priority")], 1010.0, POLICY)
    memory, _ = absorb.absorb(memory, [job(8, used=1)], 1150.0, POLICY)
    memory, _ = absorb.apply_probes(memory, {"8": model.ProbeResult(True)}, 1151.0, POLICY)
    assert memory.services["svc"].startup == (151.0,)
