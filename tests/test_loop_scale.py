"""loop.Controller with MIN-MAX services: demand sets the count, a held request wakes, routes go to the
wake proxy while no backend takes requests. In-process Slurm, fake clock, fake prober, fake proxy."""

import json
import os

from forever_slurm.core import loop, planner, scheduler, wake
from forever_slurm.common import settings

from fakes import Clock, Inflight, Prober, url_of


class FakeWake:
    """What the loop asks of wake.WakeProxy; `holding` is what a test says is held."""

    def __init__(self):
        self.holding = {}
        self.boards = {}
        self.listening = {}
        self.closed = []
        self.timeout = None
        self.shut = False

    def listen(self, service, health_path=None, health_status=None, port=0):
        self.asked_port = port
        return self.listening.setdefault(service, port or 45000 + len(self.listening))

    def publish(self, service, board):
        self.boards[service] = board

    def close(self, service):
        self.closed.append(service)
        self.listening.pop(service, None)

    def held(self):
        return {name: wake.Held(count, 3.0) for name, count in self.holding.items() if count}

    def own_ports(self):
        return frozenset(self.listening.values())

    def shutdown(self):
        self.shut = True


ENV = ('SERVICE_LIST="hello-python/0-3"\nFS_SPREAD=no\nFS_SLEEP_INTERVAL=60\nFS_SCALE_TARGET=2\n'
       'FS_SCALE_WINDOW=4\nFS_SCALE_DOWN_SECONDS=20\nFS_IDLE_SECONDS=60\n')


def make(root, fake_slurm, env=ENV):
    (root / ".env").write_text(env)
    layout = settings.Layout(str(root))
    layout.make_dirs()
    clock, prober, counter, proxy = Clock(), Prober(), Inflight(0), FakeWake()
    ctl = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                          probe_all=prober, count_inflight=counter, wake=proxy)
    return ctl, clock, counter, proxy, layout


def route_file(layout):
    return open(os.path.join(layout.watch, "hello-python.yml")).read()


def sbatches(fake_slurm):
    return fake_slurm.commands("sbatch")


def test_asleep_submits_nothing_and_routes_to_the_wake_proxy(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    for _ in range(3):
        ctl.look()
        clock.sleep(60)
    assert sbatches(fake_slurm) == []
    assert "http://127.0.0.1:%d" % proxy.listening["hello-python"] in route_file(layout)
    assert ctl.snapshot.scale["hello-python"]["phase"] == "asleep"
    assert proxy.timeout == 600.0


def test_a_held_request_wakes_at_once_and_the_route_follows_the_first_backend(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    ctl.look()
    proxy.holding["hello-python"] = 1
    ctl.probe_pass()
    assert ctl.next_look_in() == 0, "a held request asks for a look at Slurm now"
    assert ctl.snapshot.scale["hello-python"]["phase"] == "waking"
    assert ctl.snapshot.scale["hello-python"]["held"] == 1
    clock.sleep(1)
    ctl.look()
    assert len(sbatches(fake_slurm)) == 1
    assert scheduler._nap(ctl, 60) == scheduler.WAKING_PROBE_DELAY
    assert ctl.next_look_in() == planner.MIN_LOOK_GAP, "the job's start is looked for every second"
    fake_slurm.publish_all()
    clock.sleep(1)
    ctl.look()
    job = fake_slurm.jobs[0]
    url = url_of(job)
    assert proxy.boards["hello-python"] == wake.Board((url,)), "the proxy forwards the held requests here"
    text = route_file(layout)
    assert url in text and "127.0.0.1:%d" % proxy.listening["hello-python"] not in text
    proxy.holding.clear()
    assert ctl.snapshot.scale["hello-python"]["phase"] == "up"


def test_load_scales_up_then_down_after_the_delay_then_to_zero_when_idle(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    proxy.holding["hello-python"] = 1
    ctl.look()
    proxy.holding.clear()
    fake_slurm.publish_all()
    clock.sleep(1)
    ctl.look()
    counter.per_url = 5         # 5 in flight on one backend, 2 per backend wanted: 3 instances
    for _ in range(6):
        clock.sleep(1)
        ctl.look()
        fake_slurm.publish_all()
    assert ctl.snapshot.desired["hello-python"] == 3
    running = [j for j in fake_slurm.jobs if j["state"] == "R"]
    assert len(running) == 3
    counter.per_url = 0
    targets = []
    for _ in range(100):
        clock.sleep(2)
        ctl.look()
        targets.append(ctl.snapshot.desired["hello-python"])
    # Down to 1 once the delay (20 s) has passed, to 0 once idle (60 s since the last request).
    assert targets[0] == 3 and 1 in targets and targets[-1] == 0
    assert targets.index(1) * 2 >= 20 - 4
    assert all(a >= b for a, b in zip(targets, targets[1:])), "no flapping on the way down"
    assert "127.0.0.1:%d" % proxy.listening["hello-python"] in route_file(layout), "asleep again: wake route"


def test_fixed_services_never_get_a_wake_route(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm, 'SERVICE_LIST="hello-python/0"\nFS_SPREAD=no\n')
    ctl.look()
    assert proxy.listening == {} and not os.path.exists(os.path.join(layout.watch, "hello-python.yml"))


def test_a_service_no_longer_min_max_closes_its_listener(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    ctl.look()
    assert "hello-python" in proxy.listening
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    clock.sleep(60)
    ctl.look()
    assert proxy.closed == ["hello-python"]


def test_demand_survives_a_restart(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    proxy.holding["hello-python"] = 1
    ctl.look()
    saved = json.loads(open(layout.state_file).read())["scale"]["hello-python"]
    assert saved["target"] == 1 and saved["last_request_at"] == clock()
    again = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                            probe_all=Prober(), count_inflight=Inflight(0), wake=FakeWake())
    clock.sleep(5)
    again.look()
    assert again.snapshot.desired["hello-python"] == 1, "a restart does not put a busy service to sleep"


def test_a_restarted_loop_asks_for_the_wake_port_traefik_still_names(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    ctl.look()
    port = proxy.listening["hello-python"]
    assert json.loads(open(layout.state_file).read())["scale"]["hello-python"]["wake_port"] == port
    fresh = FakeWake()
    again = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                            probe_all=Prober(), count_inflight=Inflight(0), wake=fresh)
    again.look()
    assert fresh.asked_port == port


def test_a_request_seen_in_the_access_log_keeps_it_up(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    proxy.holding["hello-python"] = 1
    ctl.look()
    proxy.holding.clear()
    log_path = os.path.join(layout.log, "traefik-access.log")
    open(log_path, "w").close()
    for _ in range(40):         # 80 s, past FS_IDLE_SECONDS, with one short request every 20 s
        clock.sleep(2)
        if _ % 10 == 0:
            with open(log_path, "a") as handle:
                handle.write(json.dumps({"ServiceName": "hello-python@file"}) + "\n")
        ctl.look()
        assert ctl.snapshot.desired["hello-python"] == 1


def test_a_job_waiting_in_the_queue_is_looked_for_less_often_as_it_waits(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    proxy.holding["hello-python"] = 2
    ctl.look()                                     # submitted; the shim job stays pending
    delays = {}
    for age in (0.5, 5, 20, 100, 400):
        clock.now = ctl.snapshot.memory.jobs[next(iter(ctl.snapshot.memory.jobs))].submitted_at + age
        ctl.probe_pass()
        delays[age] = ctl.next_look_in()
    assert delays == {0.5: 1.0, 5: 1.0, 20: 2.0, 100: 10.0, 400: 40.0}, "held: a tenth of the wait, at least 1 s"
    proxy.holding.clear()
    for age, delay in ((5, 2.0), (29, 2.0), (40, 20.0), (100, 50.0), (400, 60.0)):
        clock.now = ctl.snapshot.memory.jobs[next(iter(ctl.snapshot.memory.jobs))].submitted_at + age
        ctl.probe_pass()
        assert ctl.next_look_in() == delay, age


def test_a_fixed_service_made_min_max_keeps_its_jobs_until_idle(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm, 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n'
                                                    'FS_SLEEP_INTERVAL=60\nFS_IDLE_SECONDS=60\n')
    ctl.look()
    fake_slurm.publish_all()
    clock.sleep(2)
    ctl.look()
    (root / ".env").write_text(ENV)
    targets = []
    for _ in range(40):
        clock.sleep(2)
        ctl.look()
        targets.append(ctl.snapshot.desired["hello-python"])
    assert targets[0] == 2, "nothing is stopped the moment the service becomes MIN-MAX"
    assert targets[-1] == 0 and targets.index(0) * 2 >= 60 - 2, "idle counts from the change"


def test_a_stopping_loop_leaves_no_route_to_a_wake_port_nobody_owns(root, fake_slurm):
    """Once the loop stops, its wake port is free for any local user to bind and receive the
    service's requests: Traefik's file must not name it (503 until a restarted loop takes it back)."""
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    ctl.look()
    wake_url = "http://127.0.0.1:%d" % proxy.listening["hello-python"]
    assert wake_url in route_file(layout)
    scheduler.run_forever(ctl, lambda: True, monotonic=clock, wait=clock.sleep)
    assert proxy.shut and wake_url not in route_file(layout) and "servers: []" in route_file(layout)
    again = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                            probe_all=Prober(), count_inflight=Inflight(0), wake=FakeWake())
    again.look()
    assert again.wake.asked_port == proxy.listening["hello-python"], "a restarted loop takes its port back"
    assert wake_url in route_file(layout)


def test_while_sbatch_keeps_failing_the_wake_proxy_is_told_why_and_until_when(root, fake_slurm):
    ctl, clock, counter, proxy, layout = make(root, fake_slurm)
    fake_slurm.fail["sbatch"] = "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
    proxy.holding["hello-python"] = 1
    ctl.look()
    board = proxy.boards["hello-python"]
    assert len(sbatches(fake_slurm)) == 1 and board.ready_urls == ()
    assert "sbatch failed" in board.refusing and "QOSMaxSubmitJobPerUserLimit" in board.refusing
    assert board.refusing.endswith("next try in %d s" % board.retry_after) and 8 <= board.retry_after <= 12
    del fake_slurm.fail["sbatch"]
    clock.sleep(board.retry_after)
    ctl.look()
    assert len(sbatches(fake_slurm)) == 2
    assert proxy.boards["hello-python"] == wake.Board(), "a job is on its way: requests are held again"
