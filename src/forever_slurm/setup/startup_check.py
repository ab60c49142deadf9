"""What `config` checks on the machine: Traefik's ports are free before .env is written, and Traefik, the
loop and the first jobs come up after the units start. Each returns the plain reasons when not."""

import os
import sys
import time

from . import configure
from ..common.errors import ConfigError
from ..core import state
from ..observe import loop_alive, traefik_health
from ..systems import slurm_output
from ..systems import proc
from ..common import ports

PORT_KEYS = (("FS_TRAEFIK_PORT", "FS_TRAEFIK_BIND"), ("FS_TRAEFIK_PING_PORT", None))
PROGRESS_SECONDS = 15.0     # without a terminal, a progress line at least this often


def port_review(layout, prompter, assume_yes, say, tries=5, skip=()):
    """A check of the answers before .env is written: Traefik's ports must be free, or held by our Traefik.

    skip: keys this host takes from .env.<host>, whose answers in .env are not what it listens on."""
    def review(answers):
        pid = traefik_health.our_pid(layout)
        for key, host_key in PORT_KEYS:
            if key not in skip:
                answers[key] = _free_port_answer(key, host_key, answers, pid, prompter, assume_yes, say, tries)
        return answers
    return review


def _free_port_answer(key, host_key, answers, our_pid, prompter, assume_yes, say, tries):
    """answers[key] once its port is free (or our Traefik's), asking again with a free one proposed."""
    host = answers.get(host_key, "127.0.0.1") if host_key else "127.0.0.1"
    for _ in range(tries):
        port = int(answers[key])
        user = ports.port_user(port, our_pid)
        if user == "ours" or ports.port_free(host, port):
            return answers[key]
        free = ports.free_port_near(host, port, {int(answers[k]) for k, _ in PORT_KEYS})
        problem = "%s=%d: that port on %s is in use by %s" % (key, port, host, _holder(user))
        if assume_yes:
            raise ConfigError("%s; pass --set %s=%d (free now) or stop what holds it" % (problem, key, free))
        say("  ! %s; %d is free now." % (problem, free))
        answers[key] = prompter.ask(key, str(free), configure.validator_for(key, answers))
    raise ConfigError("%s: no free port after %d tries" % (key, tries))


def _holder(user):
    if user == "you":
        return "another program of yours"
    if user.startswith("uid "):
        return "another user (%s)" % user
    return "another program"


def wait_until_up(layout, conf, report, say, seconds, clock=time.time, sleep=time.sleep, run=proc.run):
    """Wait for our Traefik to answer and the loop to write its state; [] or the plain reasons they did not."""
    say("Waiting for Traefik and the loop to start (up to %ds)..." % seconds)
    deadline = clock() + seconds
    while True:
        health = traefik_health.check(layout, conf)
        loop_pid = running_loop_pid(layout, conf, clock())
        if (health.running and loop_pid) or clock() >= deadline:
            break
        sleep(0.5)
    problems = []
    if health.running:
        say("Traefik: running (pid %d), answering on %s:%d" % (health.pid, conf.traefik_bind, conf.traefik_port))
    else:
        problems.append(health.problem)
    if loop_pid:
        say("Loop: running (pid %d)" % loop_pid)
    else:
        problems.append(_loop_problem(layout, report, run))
    for problem in problems:
        say("! " + problem)
    return problems


def running_loop_pid(layout, conf=None, now=None, proc_root="/proc"):
    """The pid of the loop that holds this root's lock (observe/loop_alive), else None.

    Not the pid in state.json: after `uninstall` and a new `config` that is the old loop's."""
    return loop_alive.running_loop_pid(layout, proc_root)


def current_snapshot(layout, proc_root="/proc"):
    """state.json when the running loop wrote it, else an empty snapshot: an earlier loop's routes and
    jobs (before an uninstall) must not pass for the new loop's."""
    snap = state.load(layout.state_file)
    pid = running_loop_pid(layout, proc_root=proc_root)
    return snap if pid is not None and snap.pid == pid else state.empty_snapshot()


def _loop_problem(layout, report, run):
    from . import units
    why = "the loop (forever-slurm) is not running"
    if report.method == "systemd":
        unit = units.unit_name(layout, "forever-slurm")
        unit_state = units.unit_states([unit], run, os.environ).get(unit)
        if unit_state:
            why += " (systemd says: %s)" % unit_state
    log_path = os.path.join(layout.log, "forever-slurm.log")
    tail = [line.strip() for line in slurm_output.tail(log_path, 3) if line.strip()]
    if tail:
        why += "; %s ends with: %s" % (os.path.relpath(log_path, layout.root), " | ".join(tail))
    return why


def wait_for_first_backends(layout, conf, say, wait_seconds, clock=time.time, sleep=time.sleep,
                             tty=None):
    """A progress line while the first jobs wait in the queue, until each service has a backend.

    Returns [] or [why nothing can come] (Slurm does not answer the loop); jobs that wait are normal."""
    wanted = {name for name, count in conf.service_list if count.low}
    if not wanted:
        return []
    tty = sys.stdout.isatty() if tty is None else tty
    deadline = clock() + wait_seconds
    say("Waiting for the first jobs to be routed (up to %ds; Ctrl-C stops waiting, the units keep running)..."
        % wait_seconds)
    line, said_line, said_at = "", "", None
    snap = None
    while clock() < deadline:
        snap = current_snapshot(layout)
        routed = {name for name, servers in snap.routes.items() if any(s.weight for s in servers)}
        pending = [j for j in snap.jobs if j.name in wanted and j.pending]
        running = sum(1 for j in snap.jobs if j.name in wanted and j.running)
        reasons = sorted({j.reason for j in pending if j.reason and j.reason != "None"})
        line = "waiting for the first jobs: %d pending%s, %d running, %d/%d services routed" % (
            len(pending), " (%s)" % ", ".join(reasons) if reasons else "", running, len(routed & wanted), len(wanted))
        if tty:
            sys.stdout.write("\r" + line + " " * 4)
            sys.stdout.flush()
        elif line != said_line or clock() - said_at >= PROGRESS_SECONDS:
            say(line)
            said_line, said_at = line, clock()
        if wanted <= routed or snap.slurm_ok is False:
            break
        sleep(2)
    if tty:
        sys.stdout.write("\n")
    if snap is not None and snap.slurm_ok is False:
        why = _still_waiting(snap, wanted)
        say("! " + why)
        return [why]
    if clock() >= deadline and snap is not None:
        say(_still_waiting(snap, wanted))
    return []


def _still_waiting(snap, wanted):
    """Why the first jobs are not routed yet, in Slurm's and the loop's words."""
    if snap.slurm_ok is False:
        return "Slurm does not answer the loop: %s" % snap.slurm_error
    errors = ["%s: %s" % (n, e) for n, e in sorted(snap.service_errors.items()) if n in wanted and e]
    if errors:
        return "these services cannot be submitted: " + "; ".join(errors)
    pending = [j for j in snap.jobs if j.name in wanted and j.pending]
    if pending:
        reasons = sorted({j.reason for j in pending if j.reason and j.reason != "None"})
        return ("%d job(s) still wait in the Slurm queue%s; `status` follows them."
                % (len(pending), " (Slurm's reason: %s)" % ", ".join(reasons) if reasons else ""))
    if any(j.name in wanted and j.running for j in snap.jobs):
        return "jobs are running but not ready yet (the server inside is still starting); `status` shows each one."
    return "no job is queued yet; `status` and .work/log/loop.log show what the loop does."
