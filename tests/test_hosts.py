"""core/hosts and core/follow: login nodes report themselves; a follower reads the leader's decisions."""

import json
import os

from forever_slurm.common import settings
from forever_slurm.core import follow, hosts, model, state

from fakes import Clock


def test_a_host_reports_changes_at_once_only_when_they_matter(tmp_path):
    layout = settings.Layout(str(tmp_path), "login2", "login1")
    clock = Clock(1000.0)
    reporter = hosts.Reporter(layout, clock, clock)
    assert reporter.report("follower", 1.0, {"svc": hosts.Load(0, 0, 0)})
    clock.now += 1
    assert not reporter.report("follower", 1.0, {"svc": hosts.Load(3, 0, 0)}), "load alone: at most every 5 s"
    assert reporter.report("follower", 1.0, {"svc": hosts.Load(3, 1, 0)}), "a held request: at once"
    clock.now += hosts.MIN_GAP
    assert reporter.report("follower", 1.0, {"svc": hosts.Load(5, 1, 1)})
    clock.now += 1
    assert reporter.report("leader", 1.0, {"svc": hosts.Load(5, 1, 1)}), "a new role: at once"
    with open(layout.host_file) as handle:
        assert json.load(handle)["role"] == "leader"


def test_the_leader_sums_the_fresh_loads_of_the_others(tmp_path):
    clock = Clock(1000.0)
    for name, load in (("login2", hosts.Load(2, 1, 4)), ("login3", hosts.Load(1, 0, 2))):
        hosts.Reporter(settings.Layout(str(tmp_path), name, "login1"), clock, clock).report(
            "follower", 1.0, {"svc": load})
    others = hosts.Others(settings.Layout(str(tmp_path), "login1", "login1"), clock)
    assert others.loads() == {"svc": hosts.Load(3, 1, 6)}
    clock.now += hosts.GONE
    assert others.loads() == {} and not others.alive(), "files that stopped changing are gone hosts"
    os.makedirs(os.path.join(str(tmp_path), ".work", "hosts", "bad"), exist_ok=True)
    with open(os.path.join(str(tmp_path), ".work", "hosts", "bad", "host.json"), "w") as handle:
        handle.write('{"load": {"svc": {"in_flight": "many", "held": -4}}}')
    assert others.loads() == {"svc": hosts.Load(0, 0, 0)}, "odd values count as nothing"


def test_a_follower_takes_the_leaders_decisions_and_its_own_readiness(tmp_path):
    path = str(tmp_path / "state.json")
    leader = model.Memory({"1": model.JobMemory("svc", url="http://a:1", ready_since=5.0, drain_since=9.0),
                           "2": model.JobMemory("svc", url="http://b:2", ready_since=5.0)}, {})
    state.save(path, state.empty_snapshot()._replace(memory=leader, desired={"svc": 2}))
    clock = Clock(1000.0)
    view = follow.LeaderView(path, clock)
    own = model.Memory({"1": model.JobMemory("svc", url="http://a:1", ready_since=None, probe_failures=2),
                        "2": model.JobMemory("svc", url="http://old:2", ready_since=7.0)}, {})
    merged = follow.merged(view.read().memory, own)
    assert merged.jobs["1"].drain_since == 9.0 and merged.jobs["1"].ready_since is None
    assert merged.jobs["2"].ready_since is None, "a URL this host has not probed yet is not ready here"
    assert not view.stale()
    clock.now += follow.STALE + 1
    assert view.stale()
