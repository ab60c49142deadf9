"""Two login nodes, one root (issue 25): the loops of login1 and login2 share .work/ on one machine
(FOREVER_HOST), one leads through the lease, the other follows; both route their own Traefik files.
Slurm is the shim (one cluster for both), time a fake clock shared by both loops."""

import json
import os

from forever_slurm.common import settings
from forever_slurm.core import lease, loop, model

ENV = 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=10\n'


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


class Prober:
    def __init__(self):
        self.dead = set()

    def __call__(self, targets, timeout=2.0, own_ports=()):
        return {job_id: model.ProbeResult(target[0] not in self.dead) for job_id, target in targets.items()}


def calls(shim_state):
    path = shim_state / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def publish_all(shim_state):
    data = json.loads((shim_state / "jobs.json").read_text())
    for job in data["jobs"]:
        if job["state"] == "R" and not job["comment"]:
            job["comment"] = "traefik,%s,http://%s:%d" % (job["name"], job["nodes"], 40000 + int(job["id"]) % 1000)
    (shim_state / "jobs.json").write_text(json.dumps(data))


def login_node(root, host, clock, prober=None):
    from forever_slurm.systems import slurm
    layout = settings.Layout(str(root), host, "login1")
    layout.make_dirs()
    held = lease.Lease(layout.lease_dir, host, pid=os.getpid() + (0 if host == "login1" else 1), clock=clock,
                       monotonic=clock)
    return loop.Controller(layout, settings.load(layout), slurm.Slurm(), clock=clock, probe_all=prober or Prober(),
                           lease=held, monotonic=clock)


def routes(ctl):
    path = os.path.join(ctl.layout.watch, "hello-python.yml")
    return open(path).read() if os.path.exists(path) else ""


def two(root, shim_state):
    (root / ".env").write_text(ENV)
    clock = Clock()
    first, second = login_node(root, "login1", clock), login_node(root, "login2", clock)
    first.look()
    second.look()
    publish_all(shim_state)
    for _ in range(3):
        clock.now += 2
        first.look()
        second.probe_pass()
    return first, second, clock


def test_one_leads_and_acts_the_other_routes_its_own_traefik_and_asks_slurm_nothing(root, shim_state):
    first, second, clock = two(root, shim_state)
    assert first.leading and not second.leading
    urls = ["http://%s:%d" % (j["nodes"], 40000 + int(j["id"]) % 1000)
            for j in json.loads((shim_state / "jobs.json").read_text())["jobs"]]
    assert len(urls) == 2 and all(url in routes(first) and url in routes(second) for url in urls)
    assert first.layout.watch != second.layout.watch
    (shim_state / "calls.log").write_text("")
    for _ in range(30):                     # a minute: the follower makes no Slurm call at all
        clock.now += 2
        first.probe_pass()
        second.probe_pass()
    assert {c[0] for c in calls(shim_state)} <= {"squeue"} and len(calls(shim_state)) <= 7


def test_the_follower_takes_over_when_the_leader_is_killed_and_acts_then(root, shim_state):
    first, second, clock = two(root, shim_state)
    took = None
    for step in range(1, 40):               # login1's loop is killed: nobody renews its term
        clock.now += 1
        second.probe_pass()
        if second.leading:
            took = step
            break
    assert took is not None and took <= 30
    data = json.loads((shim_state / "jobs.json").read_text())
    gone = data["jobs"][0]
    gone["state"], gone["ended"] = "CA", 0          # then a job ends: the new leader replaces it
    (shim_state / "jobs.json").write_text(json.dumps(data))
    second.probe_all.dead.add("http://%s:%d" % (gone["nodes"], 40000 + int(gone["id"]) % 1000))
    clock.now += 2
    second.probe_pass()
    second.look()
    assert [c[0] for c in calls(shim_state)][-1] == "sbatch"


def test_a_paused_leader_acts_on_nothing_when_it_wakes(root, shim_state):
    first, second, clock = two(root, shim_state)
    for _ in range(40):                     # login1 is SIGSTOPped: login2 takes over
        clock.now += 1
        second.probe_pass()
    assert second.leading
    (shim_state / "calls.log").write_text("")
    first.look()                            # login1 wakes: it renews, finds the higher term, follows
    assert not first.leading and calls(shim_state) == []


def test_a_request_held_by_the_followers_wake_proxy_makes_the_leader_submit(root, shim_state):
    (root / ".env").write_text('SERVICE_LIST="hello-python/0-2"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=60\n')
    clock = Clock()
    first, second = login_node(root, "login1", clock), login_node(root, "login2", clock)

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
    assert not [c for c in calls(shim_state) if c[0] == "sbatch"]
    clock.now += 1
    second.probe_pass()                     # the held request is in login2's host.json now
    clock.now += 1
    first.probe_pass()
    assert first.next_look_in() == 0, "the leader looks at Slurm at once"
    first.look()
    assert [c[0] for c in calls(shim_state) if c[0] == "sbatch"] == ["sbatch"]


def take_over(second, clock, limit=40):
    """login1's loop is gone: login2's probe passes until it leads (bounded)."""
    for _ in range(limit):
        clock.now += 1
        second.probe_pass()
        if second.leading:
            return
    raise AssertionError("login2 never took over")


def test_a_loop_that_takes_over_in_a_probe_pass_looks_at_slurm_at_once(root, shim_state):
    first, second, clock = two(root, shim_state)
    take_over(second, clock)
    assert second.next_look_in() == 0, "the plan of the pass that took over would wait for the steady look"
    (shim_state / "calls.log").write_text("")
    second.look()
    assert [c[0] for c in calls(shim_state)][:1] == ["squeue"] and second.next_look_in() > 0


class Killed(BaseException):
    """The loop's process dies (SIGKILL): nothing after this point of the pass runs."""


def test_a_submission_the_killed_leader_recorded_but_never_made_is_made_at_once_by_the_new_leader(root, shim_state):
    first, second, clock = two(root, shim_state)
    (root / ".env").write_text(ENV.replace("/2", "/3"))

    def dies(*args, **kwargs):
        raise Killed()
    first.executor.slurm = type("Dying", (), {"submit": staticmethod(dies)})()
    clock.now += 1
    try:
        first.look()                        # intent saved, then the loop is killed before its sbatch
    except Killed:
        pass
    assert any(key.startswith(model.INTENT_PREFIX) for key in json.loads((root / ".work" / "state.json").read_text())["jobs"])
    take_over(second, clock)
    (shim_state / "calls.log").write_text("")
    second.look()
    assert [c[0] for c in calls(shim_state) if c[0] == "sbatch"] == ["sbatch"], \
        "the third instance waits up to 2 minutes for a submission that was never made"


def test_a_restarted_loop_on_the_same_host_still_waits_for_its_own_last_submission(root, shim_state):
    """A restart right after sbatch: the job may not be in squeue yet, so its intent is waited for."""
    first, second, clock = two(root, shim_state)
    intents = {"intent:1": model.JobMemory(service="hello-python", submitted_at=clock.now)}
    memory = first.snapshot.memory._replace(jobs=dict(first.snapshot.memory.jobs, **intents))
    first.snapshot = first.snapshot._replace(memory=memory)
    first._save(clock.now)
    again = login_node(root, "login1", clock)
    again.lease.pid, again.lease.pid_alive = os.getpid() + 7, lambda pid: False    # the old process is gone
    (root / ".env").write_text(ENV.replace("/2", "/3"))
    (shim_state / "calls.log").write_text("")
    clock.now += 1
    again.look()
    assert again.leading and not [c for c in calls(shim_state) if c[0] == "sbatch"]


def test_a_leader_paused_in_the_middle_of_a_pass_leaves_the_new_leaders_state_alone(root, shim_state):
    first, second, clock = two(root, shim_state)

    class PausedWhileProbing(Prober):
        """login1 is SIGSTOPped while it probes, for 40 s: login2 takes over and replaces a job that ended."""
        def __call__(self, targets, timeout=2.0, own_ports=()):
            take_over(second, clock)
            data = json.loads((shim_state / "jobs.json").read_text())
            gone = data["jobs"][0]
            gone["state"], gone["ended"] = "CA", 0
            (shim_state / "jobs.json").write_text(json.dumps(data))
            url = "http://%s:%d" % (gone["nodes"], 40000 + int(gone["id"]) % 1000)
            second.probe_all.dead.add(url)
            self.dead.add(url)              # login1, woken, finds that backend gone too
            clock.now += 2
            second.probe_pass()
            second.look()
            return Prober.__call__(self, targets, timeout, own_ports)
    first.probe_all = PausedWhileProbing()
    clock.now += 1
    (shim_state / "calls.log").write_text("")
    first.probe_pass()                      # wakes in the middle of it, and goes on
    submitted = [c for c in calls(shim_state) if c[0] == "sbatch"]
    assert len(submitted) == 1              # login2's replacement, nothing by login1
    saved = json.loads((root / ".work" / "state.json").read_text())["jobs"]
    new_job = str(max(int(j["id"]) for j in json.loads((shim_state / "jobs.json").read_text())["jobs"]))
    assert new_job in saved, "login1 wrote its memory over login2's: followers would not know the new job"
