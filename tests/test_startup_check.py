"""setup/startup_check: Traefik's ports before .env is written, and the wait for Traefik, the loop and the
first jobs after the units start."""

import os

import pytest

from forever_slurm.setup import configure, startup_check, units
from forever_slurm.common import ports, settings
from forever_slurm.core import state
from forever_slurm.common.errors import ConfigError
from forever_slurm.systems import traefik
from forever_slurm.systems.slurm import Job

from fakes import Clock, LoopStandIn, Script, free_port, no_input, traefik_ports_conf

# The fixtures layout, taken and fake_traefik are conftest.py's.


def answers(web, ping, bind="127.0.0.1"):
    return {"FS_TRAEFIK_PORT": str(web), "FS_TRAEFIK_BIND": bind, "FS_TRAEFIK_PING_PORT": str(ping)}


# ---------------------------------------------------------------- ports before use

def test_yes_refuses_a_taken_port_and_names_a_free_one(layout, taken):
    review = startup_check.port_review(layout, Script().prompter(), True, lambda text="": None)
    with pytest.raises(ConfigError) as caught:
        review(answers(taken, free_port()))
    message = str(caught.value)
    assert "FS_TRAEFIK_PORT=%d" % taken in message and "in use by another program of yours" in message
    proposed = int(message.split("--set FS_TRAEFIK_PORT=")[1].split()[0])
    assert proposed != taken and ports.port_free("127.0.0.1", proposed)


def test_a_taken_port_is_asked_again_with_a_free_one_as_default(layout, taken):
    said = []
    script = Script()
    review = startup_check.port_review(layout, script.prompter(), False, said.append)
    result = review(answers(taken, free_port()))
    proposed = int(result["FS_TRAEFIK_PORT"])
    assert proposed != taken and ports.port_free("127.0.0.1", proposed)
    assert script.asked("FS_TRAEFIK_PORT [%d]" % proposed)
    assert any("is in use by another program of yours" in line for line in said)


def test_a_taken_ping_port_is_caught_too(layout, taken):
    review = startup_check.port_review(layout, Script().prompter(), True, lambda text="": None)
    with pytest.raises(ConfigError) as caught:
        review(answers(free_port(), taken))
    assert "FS_TRAEFIK_PING_PORT=%d" % taken in str(caught.value)


def test_the_ports_of_our_own_running_traefik_are_fine(layout, fake_traefik):
    web, ping = free_port(), None
    ping = ports.free_port_near("127.0.0.1", web, {web})
    fake_traefik(web, ping)
    review = startup_check.port_review(layout, configure.Prompter(no_input, no_input), True, lambda text="": None)
    assert review(answers(web, ping)) == answers(web, ping)


# ---------------------------------------------------------------- after the units start

def test_a_loop_that_did_not_start_is_named_with_the_end_of_its_log(layout, taken):
    conf = traefik_ports_conf(layout, taken, free_port())
    with open(os.path.join(layout.log, "forever-slurm.log"), "w") as handle:
        handle.write("Traceback (most recent call last):\nforever-slurm: .env:3: FS_SURGE must be a number\n")
    clock = Clock(1000.0)
    said = []
    report = units.Report("cron", [], [], [])
    problems = startup_check.wait_until_up(layout, conf, report, said.append, 10, clock=clock, sleep=clock.sleep)
    assert len(problems) == 2
    assert problems[0].startswith("Traefik is not running: port %d is taken" % taken)
    assert problems[1].startswith("the loop (forever-slurm) is not running")
    assert "FS_SURGE must be a number" in problems[1]
    assert clock.now >= 1010   # it waited the whole time, but no longer
    assert said[0].startswith("Waiting for Traefik and the loop to start")


def test_waiting_without_a_terminal_prints_progress_and_slurms_reason(layout, monkeypatch):
    conf = traefik_ports_conf(layout, free_port(), free_port() + 1)
    conf = conf._replace(service_list=[("hello", settings.Instances(1, 1))])
    job = Job("41", "PD", "hello", "", None, None, "Resources", "")
    snap = state.empty_snapshot()._replace(jobs=[job], slurm_ok=True, updated_at=1000.0, pid=os.getpid())
    monkeypatch.setattr(state, "load", lambda path: snap)
    monkeypatch.setattr(startup_check, "running_loop_pid", lambda *args, **kwargs: os.getpid())
    clock = Clock(1000.0)
    said = []
    problems = startup_check.wait_for_first_backends(layout, conf, said.append, 60, clock=clock, sleep=clock.sleep,
                                                tty=False)
    assert problems == []
    progress = [line for line in said if line.startswith("waiting for the first jobs")]
    assert 3 <= len(progress) <= 6     # a line at least every 15 s, not one per poll
    assert progress[0] == "waiting for the first jobs: 1 pending (Resources), 0 running, 0/1 services routed"
    assert said[-1] == "1 job(s) still wait in the Slurm queue (Slurm's reason: Resources); `status` follows them."


def test_slurm_not_answering_ends_the_wait_at_once_with_its_words(layout, monkeypatch):
    conf = traefik_ports_conf(layout, free_port(), free_port() + 1)
    conf = conf._replace(service_list=[("hello", settings.Instances(1, 1))])
    snap = state.empty_snapshot()._replace(slurm_ok=False, slurm_error="squeue: fatal: no configuration",
                                           pid=os.getpid())
    monkeypatch.setattr(state, "load", lambda path: snap)
    monkeypatch.setattr(startup_check, "running_loop_pid", lambda *args, **kwargs: os.getpid())
    clock = Clock(1000.0)
    said = []
    problems = startup_check.wait_for_first_backends(layout, conf, said.append, 90, clock=clock, sleep=clock.sleep,
                                                tty=False)
    assert problems == ["Slurm does not answer the loop: squeue: fatal: no configuration"]
    assert clock.now < 1010


def test_the_loop_counts_as_up_once_it_holds_the_roots_lock(layout, tmp_path):
    conf = traefik_ports_conf(layout, free_port(), free_port() + 1)
    assert startup_check.running_loop_pid(layout, conf, 1000.0) is None
    loop = LoopStandIn(layout)
    try:
        assert startup_check.running_loop_pid(layout, conf, 1000.0) == loop.pid
    finally:
        loop.stop()
    # Its pid stays in the lock file, and this process is alive, but neither holds the lock.
    assert startup_check.running_loop_pid(layout, conf, 1000.0) is None
    with open(layout.lock_file, "w") as handle:
        handle.write("%d\n" % os.getpid())
    assert startup_check.running_loop_pid(layout, conf, 1000.0) is None


def test_after_uninstall_and_config_the_old_loops_state_does_not_pass_for_the_new_one(layout):
    """config had judged the new loop from state.json the old loop left: its routes counted as the first
    backends routed before the new loop had looked at Slurm at all."""
    conf = traefik_ports_conf(layout, free_port(), free_port() + 1)._replace(service_list=[("hello", settings.Instances(1, 1))])
    old = state.empty_snapshot()._replace(pid=999999, updated_at=900.0, slurm_ok=True,
                                          routes={"hello": [traefik.Server("http://n1:1", 1)]})
    state.save(layout.state_file, old)
    loop = LoopStandIn(layout)
    try:
        clock = Clock(1000.0)
        said = []
        startup_check.wait_for_first_backends(layout, conf, said.append, 30, clock=clock, sleep=clock.sleep,
                                              tty=False)
        assert clock.now >= 1030, "it took the old routes for the new loop's"
        assert said[-1] == "no job is queued yet; `status` and .work/log/loop.log show what the loop does."
        state.save(layout.state_file, old._replace(pid=loop.pid))      # the new loop's own first look
        clock = Clock(1000.0)
        startup_check.wait_for_first_backends(layout, conf, said.append, 30, clock=clock, sleep=clock.sleep,
                                              tty=False)
        assert clock.now < 1010
    finally:
        loop.stop()