"""`config` and `uninstall`: the steps after the questions (stage, Traefik, units) in one place."""

import hashlib
import os
import sys
import time

from . import configure
from ..common import fsutil, services, settings as settings_mod
from ..observe import joblog
from ..systems import proc, traefik
from ..core import state
from ..common.errors import ConfigError, ForeverError


# Variables the Slurm clients read that a site may set in the login shell (modules) but that
# systemd and cron do not have.
SLURM_CLIENT_VARIABLES = ("SLURM_CONF", "SLURM_CLUSTERS")


PORT_KEYS = (("FS_TRAEFIK_PORT", "FS_TRAEFIK_BIND"), ("FS_TRAEFIK_PING_PORT", None))
UP_SECONDS = 30.0           # for Traefik and the loop to come up after the units start
PROGRESS_SECONDS = 15.0     # without a terminal, a progress line at least this often


def config_command(args, layout, pyz_command, say=None, wait_seconds=90.0, up_seconds=UP_SECONDS):
    """`config` (login node) or `config --ssh` (web server). Exit 1 when what it set up is not running."""
    prompter = configure.terminal_prompter()
    say = say or prompter.say
    ensure_root(layout, prompter, args.yes, say)
    if args.ssh:
        return _config_ssh(args, layout, pyz_command, prompter, say)
    result = configure.run_config(layout, prompter, overrides=args.set, service_overrides=args.service,
                                  assume_yes=args.yes, say=say,
                                  review=port_review(layout, prompter, args.yes, say))
    conf = settings_mod.load(layout)
    if not any(count.high for _, count in conf.service_list):
        say("! No service is chosen, so no job will run. Add one with `config` (or --service NAME=N).")
    layout.make_dirs()
    for definition in result.services:
        services.stage(layout, definition)
    traefik.write_if_changed(layout.traefik_static, traefik.render_static(conf, layout), layout.staging_tmp)
    say("Traefik's static config: %s" % layout.traefik_static)
    from . import traefik_bin
    binary = traefik_bin.ensure(conf.traefik_bin, layout, os.environ, say)
    say("Traefik: %s" % binary)
    if args.no_install:
        say("Not installing units (--no-install). Start by hand:\n  %s traefik\n  %s run"
            % (" ".join(pyz_command(layout)), " ".join(pyz_command(layout))))
        return 0
    names = ("forever-traefik", "forever-slurm")
    report = _install_units(layout, names, say, unit_inputs(layout, conf, binary), extra_tools=(binary,))
    problems = wait_until_up(layout, conf, report, say, up_seconds)
    if not problems:
        problems = _wait_for_first_backends(layout, conf, say, wait_seconds)
    from ..observe import status
    say("")
    say(status.render(status.collect(layout)))
    if problems:
        say("")
        say("config wrote the settings and installed the units (%s), but: %s" % (report.method, "; ".join(problems)))
        return 1
    return 0


def ensure_root(layout, prompter, assume_yes, say):
    """A missing root is created only when asked to (a mistyped --root should not become a setup)."""
    if os.path.isdir(layout.root):
        return
    if os.path.lexists(layout.root):
        raise ForeverError("the root %s is not a directory; pass --root with the directory to set up" % layout.root)
    if not assume_yes:
        answer = prompter.ask("%s does not exist. Create it and set up forever-slurm there?" % layout.root,
                              "no", configure.yes_no)
        if answer != "yes":
            raise ForeverError("nothing was done; pass --root with the directory to set up (it does not exist: %s)"
                               % layout.root)
    try:
        os.makedirs(layout.root)
    except OSError as exc:
        raise ForeverError("cannot create the root %s: %s" % (layout.root, exc.strerror or exc))
    say("Created %s (it did not exist)." % layout.root)


def port_review(layout, prompter, assume_yes, say, tries=5):
    """A check of the answers before .env is written: Traefik's ports must be free, or held by our Traefik."""
    from ..observe import traefik_health

    def review(answers):
        pid = traefik_health.our_pid(layout)
        for key, host_key in PORT_KEYS:
            for _ in range(tries):
                port = int(answers[key])
                host = answers.get(host_key, "127.0.0.1") if host_key else "127.0.0.1"
                user = traefik_health.port_user(port, pid)
                if user == "ours" or traefik_health.port_free(host, port):
                    break
                free = traefik_health.free_port_near(host, port, {int(answers[k]) for k, _ in PORT_KEYS})
                problem = "%s=%d: that port on %s is in use by %s" % (key, port, host, _holder(user))
                if assume_yes:
                    raise ConfigError("%s; pass --set %s=%d (free now) or stop what holds it" % (problem, key, free))
                say("  ! %s; %d is free now." % (problem, free))
                answers[key] = prompter.ask(key, str(free), configure.validator_for(key, answers))
            else:
                raise ConfigError("%s: no free port after %d tries" % (key, tries))
        return answers
    return review


def _holder(user):
    if user == "you":
        return "another program of yours"
    if user.startswith("uid "):
        return "another user (%s)" % user
    return "another program"


def unit_inputs(layout, conf, traefik_binary=""):
    """What each unit reads when it starts: a change restarts it (the loop rereads .env by itself)."""
    pyz = settings_mod.running_pyz()
    program = _file_digest(pyz) if pyz else "source"
    try:
        static = fsutil.read_text_file(layout.traefik_static, "Traefik static config")
    except FileNotFoundError:
        static = ""
    tunnel = ["%s=%s" % (k, v) for k, v in sorted(conf.raw.items())
              if k.startswith("FS_SSH_") or k == "FS_TRAEFIK_PORT"]
    return {
        "forever-traefik": "\n".join([program, traefik_binary, static]),
        "forever-slurm": program,
        "forever-ssh-forward": "\n".join([program] + tunnel),
    }


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_ssh(args, layout, pyz_command, prompter, say):
    from . import sshsetup
    conf = settings_mod.load(layout)
    layout.make_dirs()

    def ask(prompt, default, several=False):
        if args.yes:
            return default
        return prompter.ask(prompt, default, several=several)

    # Without a person nobody can fix the login node between tries: one test says it all.
    setup = sshsetup.configure_ssh(conf, layout, ask, say, pyz_command(layout), tries=1 if args.yes else 3)
    backup = configure.write_env(layout, setup.updates)
    say("Wrote %s%s." % (layout.env_file, " (previous kept as %s)" % os.path.basename(backup) if backup else ""))
    if setup.failures:
        raise ForeverError("%s. Your answers are saved in %s; the tunnel was not %s. Fix that and run "
                           "`config --ssh` again." % ("; ".join(setup.failures), layout.env_file,
                                                      "started" if args.no_install else "installed"))
    local = setup.updates["FS_SSH_LOCAL_PORT"]
    log = os.path.join(layout.log, "tunnel.log")
    if args.no_install:
        say("Not installing the unit (--no-install). Start the tunnel by hand:\n  %s"
            % " ".join(setup.tunnel_argv))
    else:
        conf = settings_mod.load(layout)
        _install_units(layout, ("forever-ssh-forward",), say, unit_inputs(layout, conf))
    say("Next: point the web server at http://127.0.0.1:%s/<service>/ (try: curl http://127.0.0.1:%s/); "
        "the tunnel logs what it does to %s." % (local, local, log))
    return 0


def _install_units(layout, names, say, inputs=None, extra_tools=()):
    from . import units
    pyz = settings_mod.running_pyz()
    if not pyz:
        raise ForeverError("units run the .pyz: build it (make pyz) and run config from forever_slurm.pyz, "
                           "or use --no-install")
    passed_on = tuple((key, os.environ[key]) for key in SLURM_CLIENT_VARIABLES if os.environ.get(key))
    path = units.minimal_path(sys.executable, os.environ.get("PATH"), extra_tools)
    specs = units.standard_specs(layout, sys.executable, pyz, which=names, path=path, extra_env=passed_on)
    report = units.install(specs, layout, proc.run, os.environ, say, inputs=inputs)
    say("Supervision: %s (%s)" % (report.method, ", ".join(names)))
    return report


def wait_until_up(layout, conf, report, say, seconds, clock=time.time, sleep=time.sleep, run=proc.run):
    """Wait for our Traefik to answer and the loop to write its state; [] or the plain reasons they did not."""
    from ..observe import traefik_health
    say("Waiting for Traefik and the loop to start (up to %ds)..." % seconds)
    deadline = clock() + seconds
    while True:
        health = traefik_health.check(layout, conf)
        loop_pid = _loop_pid(layout, conf, clock())
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


def _loop_pid(layout, conf, now, proc_root="/proc"):
    """The loop's pid when it is alive and wrote state.json recently, or holds the root's lock, else None.

    The lock counts too: the first state.json comes after the first squeue, which may take FS_SLURM_TIMEOUT."""
    snap = state.load(layout.state_file)
    if snap.pid and snap.updated_at is not None and now - snap.updated_at <= max(60.0, 3 * conf.sleep_interval) \
            and _runs_for_root(snap.pid, layout, proc_root):
        return snap.pid
    try:
        with open(layout.lock_file) as handle:
            text = handle.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.isdigit() and _runs_for_root(int(text), layout, proc_root):
        return int(text)
    return None


def _runs_for_root(pid, layout, proc_root):
    """pid is alive and names this root on its command line (units run `... --root ROOT run`), not a reused pid."""
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            return os.fsencode(layout.root) in handle.read().split(b"\0")
    except OSError:
        return False


def _loop_problem(layout, report, run):
    from . import units
    why = "the loop (forever-slurm) is not running"
    if report.method == "systemd":
        unit_state = units.unit_states(["forever-slurm"], run, os.environ).get("forever-slurm")
        if unit_state:
            why += " (systemd says: %s)" % unit_state
    log_path = os.path.join(layout.log, "forever-slurm.log")
    tail = [line.strip() for line in joblog.tail(log_path, 3) if line.strip()]
    if tail:
        why += "; %s ends with: %s" % (os.path.relpath(log_path, layout.root), " | ".join(tail))
    return why


def _wait_for_first_backends(layout, conf, say, wait_seconds, clock=time.time, sleep=time.sleep,
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
        snap = state.load(layout.state_file)
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


def uninstall_command(args, layout, say=print):
    from . import units
    removed = units.uninstall(units.UNIT_NAMES, layout, proc.run, os.environ, say)
    say("Removed: %s" % (", ".join(removed) if removed else "nothing was installed"))
    say("Kept: %s, %s and the logs under %s. Jobs still queued or running end at their time limit "
        "(or scancel them)." % (layout.env_file, layout.services, layout.log))
    reminder = _tunnel_key_reminder(layout)
    if reminder:
        say(reminder)
    return 0


def _tunnel_key_reminder(layout):
    """On a web server: the tunnel key stays authorized on the login node(s) until its line is removed."""
    from . import sshsetup
    try:
        conf = settings_mod.load(layout)
    except ForeverError:
        return None
    key = conf.ssh_key_path
    nodes = [n for n in conf.ssh_login_nodes if n != sshsetup.PLACEHOLDER_NODE]
    if not nodes or not os.path.exists(key + ".pub"):
        return None
    try:
        with open(key + ".pub") as handle:
            fields = handle.read().split()
    except OSError:
        fields = []
    which = " ".join(fields[:2])[:40] + "..." if fields else "%s.pub" % key
    return ("The tunnel key %s can still open its forward: remove its line (the one ending in the key "
            "%s) from ~/.ssh/authorized_keys of %s on %s, and delete %s and %s.pub here if you no longer "
            "need them." % (key, which, conf.ssh_user or "your user", " and ".join(nodes), key, key))
