"""Two login nodes, one root (issue 25): the loops of login1 and login2 share .work/ on one machine
(FOREVER_HOST), one leads through the lease, the other follows; both route their own Traefik files.
Slurm is the in-process one (fakes.FakeSlurm: one cluster for both, a client each), time a fake clock
shared by both loops."""

import json
import os

from forever_slurm.common import settings
from forever_slurm.core import lease, loop, model

from fakes import Clock, Prober, url_of

ENV = 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=10\n'


def login_node(root, host, clock, cluster, prober=None):
    layout = settings.Layout(str(root), host, "login1")
    layout.make_dirs()
    held = lease.Lease(layout.lease_dir, host, pid=os.getpid() + (0 if host == "login1" else 1), clock=clock,
                       monotonic=clock)
    return loop.Controller(layout, settings.load(layout), cluster.client(), clock=clock, probe_all=prober or Prober(),
                           lease=held, monotonic=clock)


def routes(ctl):
    path = os.path.join(ctl.layout.watch, "hello-python.yml")
    return open(path).read() if os.path.exists(path) else ""


def two(root, fake_slurm):
    (root / ".env").write_text(ENV)
    clock = Clock()
    first, second = login_node(root, "login1", clock, fake_slurm), login_node(root, "login2", clock, fake_slurm)
    first.look()
    second.look()
    fake_slurm.publish_all()
    for _ in range(3):
        clock.now += 2
        first.look()
        second.probe_pass()
    return first, second, clock


def test_one_leads_and_acts_the_other_routes_its_own_traefik_and_asks_slurm_nothing(root, fake_slurm):
    first, second, clock = two(root, fake_slurm)
    assert first.leading and not second.leading
    urls = [url_of(j) for j in fake_slurm.jobs]
    assert len(urls) == 2 and all(url in routes(first) and url in routes(second) for url in urls)
    assert first.layout.watch != second.layout.watch
    fake_slurm.calls.clear()
    for _ in range(30):                     # a minute: the follower makes no Slurm call at all
        clock.now += 2
        first.probe_pass()
        second.probe_pass()
    assert {c[0] for c in fake_slurm.calls} <= {"squeue"} and len(fake_slurm.calls) <= 7


def test_the_follower_takes_over_when_the_leader_is_killed_and_acts_then(root, fake_slurm):
    first, second, clock = two(root, fake_slurm)
    took = None
    for step in range(1, 40):               # login1's loop is killed: nobody renews its term
        clock.now += 1
        second.probe_pass()
        if second.leading:
            took = step
            break
    assert took is not None and took <= 30
    gone = fake_slurm.job(fake_slurm.jobs[0]["id"])
    gone["state"], gone["ended"] = "CA", 0          # then a job ends: the new leader replaces it
    second.probe_all.dead.add(url_of(gone))
    clock.now += 2
    second.probe_pass()
    second.look()
    assert [c[0] for c in fake_slurm.calls][-1] == "sbatch"


def test_a_paused_leader_acts_on_nothing_when_it_wakes(root, fake_slurm):
    first, second, clock = two(root, fake_slurm)
    for _ in range(40):                     # login1 is SIGSTOPped: login2 takes over
        clock.now += 1
        second.probe_pass()
    assert second.leading
    fake_slurm.calls.clear()
    first.look()                            # login1 wakes: it renews, finds the higher term, follows
    assert not first.leading and fake_slurm.calls == []


def test_a_request_held_by_the_followers_wake_proxy_makes_the_leader_submit(root, fake_slurm):
    (root / ".env").write_text('SERVICE_LIST="hello-python/0-2"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=60\n')
    clock = Clock()
    first, second = login_node(root, "login1", clock, fake_slurm), login_node(root, "login2", clock, fake_slurm)

    class Holding:
        timeout = 600

        def __init__(self, count):
            self.count = count

        def held(self):
            from forever_slurm.core import wake
            return {"hello-python": wake.Held(self.count, 1.0)} if self.count else {}

        def listen(self, service, *args, **kwargs):
            return 45000 + (self.count or 0)

        def publish(self, *args):
            pass

        def own_ports(self):
            return frozenset()

        def close(self, service):
            pass
    first.demand.wake, second.demand.wake = Holding(0), Holding(1)
    first.look()
    second.look()
    assert not [c for c in fake_slurm.calls if c[0] == "sbatch"]
    clock.now += 1
    second.probe_pass()                     # the held request is in login2's host.json now
    clock.now += 1
    first.probe_pass()
    assert first.next_look_in() == 0, "the leader looks at Slurm at once"
    first.look()
    assert [c[0] for c in fake_slurm.calls if c[0] == "sbatch"] == ["sbatch"]


def take_over(second, clock, limit=40):
    """login1's loop is gone: login2's probe passes until it leads (bounded)."""
    for _ in range(limit):
        clock.now += 1
        second.probe_pass()
        if second.leading:
            return
    raise AssertionError("login2 never took over")


def test_a_loop_that_takes_over_in_a_probe_pass_looks_at_slurm_at_once(root, fake_slurm):
    first, second, clock = two(root, fake_slurm)
    take_over(second, clock)
    assert second.next_look_in() == 0, "the plan of the pass that took over would wait for the steady look"
    fake_slurm.calls.clear()
    second.look()
    assert [c[0] for c in fake_slurm.calls][:1] == ["squeue"] and second.next_look_in() > 0


class Killed(BaseException):
    """The loop's process dies (SIGKILL): nothing after this point of the pass runs."""


def test_a_submission_the_killed_leader_recorded_but_never_made_is_made_at_once_by_the_new_leader(root, fake_slurm):
    first, second, clock = two(root, fake_slurm)
    (root / ".env").write_text(ENV.replace("/2", "/3"))

    def dies(*args, **kwargs):
        raise Killed()
    first.executor.slurm = type("Dying", (), {"submit": staticmethod(dies)})()
    clock.now += 1
    try:
        first.look()                        # intent saved, then the loop is killed before its sbatch
    except Killed:
        pass
    saved = json.loads((root / ".work" / "state.json").read_text())["jobs"]
    assert any(key.startswith(model.INTENT_PREFIX) for key in saved)
    take_over(second, clock)
    fake_slurm.calls.clear()
    second.look()
    assert [c[0] for c in fake_slurm.calls if c[0] == "sbatch"] == ["sbatch"], \
        "the third instance waits up to 2 minutes for a submission that was never made"


def test_a_restarted_loop_on_the_same_host_still_waits_for_its_own_last_submission(root, fake_slurm):
    """A restart right after sbatch: the job may not be in squeue yet, so its intent is waited for."""
    first, second, clock = two(root, fake_slurm)
    intents = {"intent:1": model.JobMemory(service="hello-python", submitted_at=clock.now)}
    memory = first.snapshot.memory._replace(jobs=dict(first.snapshot.memory.jobs, **intents))
    first.snapshot = first.snapshot._replace(memory=memory)
    first._save(clock.now)
    again = login_node(root, "login1", clock, fake_slurm)
    again.lease.pid, again.lease.pid_alive = os.getpid() + 7, lambda pid: False    # the old process is gone
    (root / ".env").write_text(ENV.replace("/2", "/3"))
    fake_slurm.calls.clear()
    clock.now += 1
    again.look()
    assert again.leading and not [c for c in fake_slurm.calls if c[0] == "sbatch"]


def test_a_leader_paused_in_the_middle_of_a_pass_leaves_the_new_leaders_state_alone(root, fake_slurm):
    first, second, clock = two(root, fake_slurm)

    class PausedWhileProbing(Prober):
        """login1 is SIGSTOPped while it probes, for 40 s: login2 takes over and replaces a job that ended."""
        def __call__(self, targets, timeout=2.0, own_ports=()):
            take_over(second, clock)
            gone = fake_slurm.job(fake_slurm.jobs[0]["id"])
            gone["state"], gone["ended"] = "CA", 0
            second.probe_all.dead.add(url_of(gone))
            self.dead.add(url_of(gone))     # login1, woken, finds that backend gone too
            clock.now += 2
            second.probe_pass()
            second.look()
            return Prober.__call__(self, targets, timeout, own_ports)
    first.probe_all = PausedWhileProbing()
    clock.now += 1
    fake_slurm.calls.clear()
    first.probe_pass()                      # wakes in the middle of it, and goes on
    assert len([c for c in fake_slurm.calls if c[0] == "sbatch"]) == 1     # login2's replacement, none by login1
    saved = json.loads((root / ".work" / "state.json").read_text())["jobs"]
    new_job = str(max(int(j["id"]) for j in fake_slurm.jobs))
    assert new_job in saved, "login1 wrote its memory over login2's: followers would not know the new job"
