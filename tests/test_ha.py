"""Two login nodes, one root (issue 25): the loops of login1 and login2 share .work/ on one machine
(FOREVER_HOST), one leads through the lease, the other follows; both route their own Traefik files.
Slurm is the in-process one (fakes.FakeSlurm: one cluster for both, a client each), time a fake clock
shared by both loops."""

import os

from forever_slurm.common import settings
from forever_slurm.core import lease, loop

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
