"""Supervision: render, install and remove the user systemd units, or crontab lines where systemd cannot serve."""

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from typing import NamedTuple

from ..common import fsutil
from ..systems import slurm_output
from ..common.errors import CommandError, ForeverError

UNIT_NAMES = ("forever-traefik", "forever-slurm", "forever-ssh-forward")
SUBCOMMANDS = {"forever-traefik": "traefik", "forever-slurm": "run", "forever-ssh-forward": "tunnel"}
DESCRIPTIONS = {
    "forever-traefik": "forever-slurm: Traefik load balancer",
    "forever-slurm": "forever-slurm: keeps the Slurm jobs of every service running",
    "forever-ssh-forward": "forever-slurm: ssh tunnel to Traefik on the login node",
}
CRON_MARK = " # forever-slurm:"
HEADER = "# Written by forever-slurm; `forever_slurm.pyz uninstall` removes it. Edits are replaced on install."
# `StandardOutput=append:` arrived in systemd 240; RHEL 8 ships 239, where it would be ignored.
APPEND_MIN_SYSTEMD = 240
# The programs the units run or call, in the order their directories go on the units' PATH.
PATH_TOOLS = ("sbatch", "squeue", "scontrol", "scancel", "traefik", "ssh", "flock")
BASE_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
STOP_SECONDS = 30.0         # as TimeoutStopSec below: then SIGKILL
START_CHECK_SECONDS = 3.0   # how long a cron-started program is watched for an exit at once

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:=@+,-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnitSpec(NamedTuple):
    name: str               # what it is: forever-traefik, forever-slurm, forever-ssh-forward
    description: str
    argv: list
    workdir: str
    log_path: str
    environment: tuple = ()  # (key, value) pairs the process needs (PATH: systemd and cron start bare)
    unit: str = ""          # its systemd unit, name-<root and host id> (unit_name); "" = name
    machine: str = ""       # the host name systemd must have to start it (ConditionHost); "" = any

    @property
    def unit_name(self):
        return self.unit or self.name


class Report(NamedTuple):
    method: str          # "systemd" or "cron"
    written: list        # files or tables that changed
    backups: list        # copies kept of files we replaced
    notes: list          # things the user should know or do (already said)
    started: list = []   # units that were not running and were started
    restarted: list = []  # running units restarted because what they run with changed


# ---------------------------------------------------------------- pure rendering


def minimal_path(python, search_path, extra=()):
    """A short PATH for the units on which every tool of PATH_TOOLS is the very file search_path finds.

    It holds the directories of python, extra, each tool found on search_path and BASE_PATH, in that
    order of preference, except that a tool's directory comes before every other one holding a program
    of that name: a login node with the distribution's /usr/bin/squeue beside a site's Slurm loaded by
    `module load` must not run the wrong squeue because python3 lives in /usr/bin. Not the caller's
    whole PATH: that is long, differs between shells, and would rewrite the units and the crontab each
    time `config` is run from another one (the order here depends only on what the tools resolve to)."""
    resolved = {tool: _found(shutil.which(tool, path=search_path or "")) for tool in PATH_TOOLS}
    candidates = [python] + list(extra) + [found for found in resolved.values() if found]
    dirs = []
    for directory in [os.path.dirname(p) for p in candidates if p and os.path.isabs(p)] + list(BASE_PATH):
        directory = os.path.normpath(directory)
        if directory not in dirs:
            dirs.append(directory)
    # before[d]: directories that must come before d (they hold the tool d also has).
    before = {d: set() for d in dirs}
    for tool, found in resolved.items():
        if not found:
            continue
        home = os.path.dirname(found)
        for other in dirs:
            if other != home and _is_program(os.path.join(other, tool)):
                before[other].add(home)
    ordered = []
    while len(ordered) < len(dirs):
        ready = [d for d in dirs if d not in ordered and before[d] <= set(ordered)]
        # No cycle is possible (each tool resolves to one directory of search_path); guard anyway.
        ordered.append(ready[0] if ready else next(d for d in dirs if d not in ordered))
    return os.pathsep.join(ordered)


def _found(path):
    return os.path.normpath(os.path.abspath(path)) if path else None


def _is_program(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def path_differences(unit_path, search_path, tools=PATH_TOOLS):
    """[(tool, what search_path runs, what unit_path runs)] for each tool the two find differently:
    what `config` checks before the units run Slurm's commands."""
    differences = []
    for tool in tools:
        mine = _found(shutil.which(tool, path=search_path or ""))
        theirs = _found(shutil.which(tool, path=unit_path or ""))
        if mine and mine != theirs:
            differences.append((tool, mine, theirs))
    return differences


def unit_name(layout, name):
    """The systemd unit of `name` for this root on this host: forever-slurm-<Layout.unit_id>. Earlier
    versions named them `name` alone, per user: a second root's `config` rewrote the first's."""
    return "%s-%s" % (name, layout.unit_id)


def standard_specs(layout, python, pyz, which=("forever-traefik", "forever-slurm"), path=None, extra_env=(),
                   machine=""):
    """The units forever-slurm installs, each running `python pyz --root ROOT <subcommand>`.

    extra_env: (key, value) pairs from the session that ran `config` which the units need under systemd
    or cron too (SLURM_CONF set by a site's module, FOREVER_HOST). machine: the host name (gethostname)
    that may start them, since a home shared by login nodes shows every host's units to every host."""
    env = [("PYTHONUNBUFFERED", "1")]  # logs go to a file: without this, lines sit in a buffer
    if path:
        env.insert(0, ("PATH", path))
    env += list(extra_env)
    specs = []
    for name in which:
        if name not in SUBCOMMANDS:
            raise ForeverError("unknown unit %r; known units: %s" % (name, ", ".join(UNIT_NAMES)))
        specs.append(UnitSpec(
            name=name,
            description=DESCRIPTIONS[name],
            argv=[python, pyz, "--root", layout.root, SUBCOMMANDS[name]],
            workdir=layout.root,
            log_path=os.path.join(layout.log, name + ".log"),
            environment=tuple(env),
            unit=unit_name(layout, name),
            machine=machine,
        ))
    return specs


def _check_text(spec):
    for value in [spec.name, spec.unit, spec.machine, spec.description, spec.workdir, spec.log_path] + \
            list(spec.argv) + \
            [k + "=" + v for k, v in spec.environment]:
        if _CONTROL.search(str(value)):
            raise ForeverError("%s: %r contains a newline or control character; use a path without one"
                               % (spec.name, value))
    if not os.path.isabs(spec.argv[0]):
        raise ForeverError("%s: the program %r must be an absolute path" % (spec.name, spec.argv[0]))


def systemd_word(word):
    """One ExecStart= word: systemd expands %specifiers and $VARS there, so both are escaped."""
    word = str(word).replace("%", "%%").replace("$", "$$")
    if word == ";":
        return "\\;"
    if _SAFE_WORD.match(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_assignment(key, value):
    text = ("%s=%s" % (key, value)).replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec, systemd_version=None):
    """The text of <name>.service; pass systemd_version (from `systemctl --version`) when known."""
    _check_text(spec)
    pct = lambda text: str(text).replace("%", "%%")  # noqa: E731 (unit values expand %specifiers)
    lines = [
        HEADER,
        "[Unit]",
        "Description=" + pct(spec.description),
        # RestartSec below keeps restarts slow, so the start rate limit would only stop a unit for good.
        "StartLimitIntervalSec=0",
    ]
    if spec.machine:
        # Every login node sharing the home sees this file: only the one that installed it starts it.
        lines.append("ConditionHost=" + pct(spec.machine))
    lines += [
        "",
        "[Service]",
        "Type=simple",
        "WorkingDirectory=" + pct(spec.workdir),
    ]
    if spec.environment:
        lines.append("Environment=" + " ".join(_systemd_assignment(k, v) for k, v in spec.environment))
    if systemd_version is not None and systemd_version < APPEND_MIN_SYSTEMD:
        # Old systemd has no append:, so a shell appends instead; "$0" is the log, "$@" the command.
        wrapped = ["/bin/sh", "-c", 'exec "$@" >>"$0" 2>&1', spec.log_path] + list(spec.argv)
        lines.append("ExecStart=" + " ".join(systemd_word(w) for w in wrapped))
    else:
        lines.append("ExecStart=" + " ".join(systemd_word(w) for w in spec.argv))
    lines += [
        # always, not on-abnormal: a process that exits non-zero must come back too.
        "Restart=always",
        "RestartSec=5",
        # SIGTERM to the main process first so it can stop its children (Traefik, ssh) itself.
        "KillMode=mixed",
        "TimeoutStopSec=30",
    ]
    if systemd_version is None or systemd_version >= APPEND_MIN_SYSTEMD:
        lines += ["StandardOutput=append:" + pct(spec.log_path), "StandardError=append:" + pct(spec.log_path)]
    lines += ["", "[Install]", "WantedBy=default.target", ""]
    return "\n".join(lines)


def cron_lock(layout, name):
    """flock(1) and fcntl locks do not see each other on Linux, so cron runs get their own lock file."""
    return os.path.join(layout.host_work, "cron-%s.lock" % name)


def _cron_escape(text):
    # cron turns an unescaped % into a newline; \% reaches the shell as %.
    return text.replace("%", "\\%")


def cron_marker(layout, name):
    """The comment that ends our crontab lines: root and name, as every earlier version wrote them, and
    on a host that is not the root's first the host too (two hosts of one machine share its crontab)."""
    host = "" if layout.is_first_host else " @" + layout.host
    return _cron_escape(CRON_MARK + layout.root + " " + name + host)


def shell_command(spec, layout):
    """The /bin/sh command a cron line runs (before cron's % escaping)."""
    _check_text(spec)
    q = shlex.quote
    env = " ".join("%s=%s" % (k, q(v)) for k, v in spec.environment)
    return "cd %s && %s%sflock -n %s %s >>%s 2>&1" % (
        q(spec.workdir), env, " " if env else "", q(cron_lock(layout, spec.name)),
        " ".join(q(str(a)) for a in spec.argv), q(spec.log_path))


def cron_command(spec, layout):
    return _cron_escape(shell_command(spec, layout)) + cron_marker(layout, spec.name)


def cron_lines(specs, layout):
    """At reboot and every minute per unit; flock -n makes the every-minute run a no-op while one runs."""
    lines = []
    for spec in specs:
        command = cron_command(spec, layout)
        lines.append("@reboot " + command)
        lines.append("* * * * * " + command)
    return lines


def cron_owner(line, layout):
    """The unit name if this crontab line is ours for this root and host, else None."""
    line = line.rstrip()
    for name in UNIT_NAMES:
        marker = cron_marker(layout, name)
        if line.endswith(marker) and line[:-len(marker)].strip():
            return name
    return None


def merge_crontab(old_text, new_lines, layout, names):
    """The table without our lines for names, plus new_lines; everything else kept as it was."""
    kept = [line for line in old_text.splitlines() if cron_owner(line, layout) not in names]
    while kept and not kept[-1].strip():
        kept.pop()
    lines = kept + list(new_lines)
    return "\n".join(lines) + "\n" if lines else ""


# ---------------------------------------------------------------- the outside world


def session_env(environ, uid, run_user_dir="/run/user"):
    """environ plus XDG_RUNTIME_DIR / DBUS_SESSION_BUS_ADDRESS when missing (as after `su -`) and present on disk."""
    env = dict(environ)
    runtime = os.path.join(run_user_dir, str(uid))
    if not env.get("XDG_RUNTIME_DIR") and os.path.isdir(runtime):
        env["XDG_RUNTIME_DIR"] = runtime
    bus = os.path.join(env.get("XDG_RUNTIME_DIR") or runtime, "bus")
    if not env.get("DBUS_SESSION_BUS_ADDRESS") and os.path.exists(bus):
        env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=" + bus
    return env


def systemd_usable(run, environ):
    """(True, "") when `systemctl --user` reaches a user manager, else (False, why)."""
    try:
        done = run(["systemctl", "--user", "show-environment"], timeout=15, env=dict(environ), check=False)
    except CommandError as exc:
        return False, str(exc)
    if done.returncode != 0:
        detail = (done.stderr or "").strip().splitlines()
        return False, "systemctl --user: " + (detail[-1] if detail else "exit %s" % done.returncode)
    return True, ""


def systemd_version(run, environ):
    """The number in `systemctl --version` ("systemd 252 (...)"), or None."""
    try:
        done = run(["systemctl", "--version"], timeout=15, env=dict(environ), check=False)
    except CommandError:
        return None
    match = re.match(r"systemd (\d+)", done.stdout or "")
    return int(match.group(1)) if match else None


def user_name(environ):
    name = environ.get("USER") or environ.get("LOGNAME")
    if name:
        return name
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def linger_advice(run, user, environ=None):
    """None when lingering is on (units outlive logout and start at boot); else what to run or ask."""
    env = dict(os.environ if environ is None else environ)
    try:
        done = run(["loginctl", "show-user", user, "-p", "Linger"], timeout=15, env=env, check=False)
        answer = (done.stdout or "").strip()
    except CommandError:
        answer = ""
    if answer == "Linger=yes":
        return None
    return ("Lingering is off for %s, so the units stop when you log out and do not start at boot. "
            "Run `loginctl enable-linger %s`; if that is refused, ask your cluster admins to run "
            "`loginctl enable-linger %s` for you." % (user, user, user))


def unit_dir(environ):
    """~/.config/systemd/user, with HOME and XDG_CONFIG_HOME taken from environ."""
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(_home(environ), ".config")
    return os.path.join(config, "systemd", "user")


def _home(environ):
    home = environ.get("HOME")
    if not home:
        raise ForeverError("HOME is not set; set it to your home directory and run this again")
    return home


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_unit_files(specs, directory, version=None, now=None):
    """Write changed unit files; a different file already there is kept as <file>.bak-<time>. -> (written, backups)."""
    now = time.time() if now is None else now
    os.makedirs(directory, exist_ok=True)
    written, backups = [], []
    for spec in specs:
        path = os.path.join(directory, spec.unit_name + ".service")
        text = render_unit(spec, version)
        old = _read(path)
        if old == text:
            continue
        if old is not None:
            backups.append(fsutil.backup(path, now))
        fsutil.atomic_write(path, text)
        written.append(path)
    return written, backups


def install_supervision(specs, layout, run, environ, say, uid=None, run_user_dir="/run/user", proc_root="/proc",
            kill=os.kill, inputs=None):
    """Install and start specs under systemd --user, else as crontab lines. Re-running is harmless.

    inputs: {unit name: text} of what each unit reads when it starts (its config, the .pyz); a running
    unit whose inputs or unit text differ from the ones it was last started with is restarted, so a
    changed setting takes effect whatever the supervisor."""
    layout.make_dirs()
    for spec in specs:
        # systemd's append: and cron's >> create the unit's log by the umask (0644), but keep a file's mode.
        fsutil.private_log(spec.log_path)
    inputs = inputs or {}
    env = session_env(environ, os.getuid() if uid is None else uid, run_user_dir)
    usable, why = systemd_usable(run, env)
    if usable:
        # Lines from an earlier cron install would start a second copy next to the units.
        _uninstall_cron([s.name for s in specs], layout, run, env, say, proc_root, kill)
        return _install_systemd(specs, layout, run, env, say, inputs)
    say("systemd --user cannot be used here (%s); using crontab instead." % why)
    return _install_cron(specs, layout, run, env, say, inputs, proc_root, kill)


def started_record(layout, name):
    """Where install notes what a unit was last (re)started with."""
    return os.path.join(layout.host_work, "started-%s.sha256" % name)


def fingerprint(unit_text, inputs):
    return hashlib.sha256((unit_text + "\0" + (inputs or "")).encode("utf-8", "replace")).hexdigest()


def _recorded(layout, name):
    try:
        with open(started_record(layout, name)) as handle:
            return handle.read(200).strip()
    except (OSError, UnicodeDecodeError):
        return None


def _record(layout, name, value):
    fsutil.atomic_write(started_record(layout, name), value + "\n", only_if_changed=True)


def _say_actions(say, method, started, restarted, unchanged):
    if started:
        say("%s: started %s" % (method, ", ".join(started)))
    if restarted:
        say("%s: restarted %s, as %s settings changed" % (
            method, ", ".join(restarted), "its" if len(restarted) == 1 else "their"))
    if unchanged:
        say("%s: %s already running with these settings" % (method, ", ".join(unchanged)))


def _install_systemd(specs, layout, run, env, say, inputs):
    directory = unit_dir(env)
    version = systemd_version(run, env)
    systemctl = lambda *args: run(["systemctl", "--user"] + list(args), timeout=60, env=env)  # noqa: E731
    # An earlier version's unit of this root holds Traefik's port and the root's lock: gone first.
    replaced = remove_legacy_units([s.name for s in specs], layout, directory, run, env, say)
    written, backups = write_unit_files(specs, directory, version)
    for path in backups:
        say("kept your previous unit file as %s" % path)
    systemctl("daemon-reload")
    units = {s.unit_name: s.name for s in specs}
    names = list(units)
    was_active = _active(run, env, names)
    prints = {s.unit_name: fingerprint(render_unit(s, version), inputs.get(s.name)) for s in specs}
    restarted = [n for n in was_active if _recorded(layout, units[n]) != prints[n]]
    systemctl("enable", "--now", *names)
    # enable --now leaves a running unit alone; restart so a new .pyz, unit or setting takes effect.
    if restarted:
        systemctl("restart", *restarted)
    for name in names:
        _record(layout, units[name], prints[name])
    _say_actions(say, "systemd", [n for n in names if n not in was_active], restarted,
                 [n for n in was_active if n not in restarted])
    if replaced:
        say("systemd: the units %s of an earlier version, which ran this root, are replaced by %s"
            % (", ".join(replaced), ", ".join(names)))
    notes = []
    advice = linger_advice(run, user_name(env), env)
    if advice:
        say(advice)
        notes.append(advice)
    return Report("systemd", written, backups, notes, [n for n in names if n not in was_active], restarted)


def legacy_unit_files(names, layout, directory):
    """{name: path} of units an earlier version installed as `name`.service (one per user) whose
    ExecStart runs this root; another root's are not ours to touch."""
    found = {}
    for name in names:
        path = os.path.join(directory, name + ".service")
        text = _read(path)
        if text is not None and runs_root(text, layout.root):
            found[name] = path
    return found


def runs_root(unit_text, root):
    """True when the unit's ExecStart passes `--root <root>` (the same directory, however spelled)."""
    for line in unit_text.splitlines():
        if not line.startswith("ExecStart="):
            continue
        try:
            words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line[len("ExecStart="):])]
        except ValueError:
            continue
        for flag, value in zip(words, words[1:]):
            if flag == "--root" and os.path.realpath(value) == os.path.realpath(root):
                return True
    return False


def remove_legacy_units(names, layout, directory, run, env, say):
    """Stop, disable and remove the earlier version's units of this root; the names it removed."""
    found = legacy_unit_files(names, layout, directory)
    if not found:
        return []
    legacy = sorted(found, key=names.index)
    run(["systemctl", "--user", "stop"] + legacy, timeout=60, env=env, check=False)
    run(["systemctl", "--user", "disable"] + legacy, timeout=60, env=env, check=False)
    for name in legacy:
        if not _read(found[name]).startswith(HEADER):
            say("kept your edited unit file as %s" % fsutil.backup(found[name]))
        os.remove(found[name])
        say("removed %s (an earlier version's unit of this root)" % found[name])
    run(["systemctl", "--user", "daemon-reload"], timeout=60, env=env, check=False)
    return legacy


def _active(run, env, names):
    done = run(["systemctl", "--user", "is-active"] + list(names), timeout=30, env=env, check=False)
    states = (done.stdout or "").split()
    return [name for name, state in zip(names, states) if state in ("active", "activating", "reloading")]


def unit_states(names, run, environ, uid=None, run_user_dir="/run/user"):
    """{name: `systemctl --user is-active` word} (active, activating, failed, inactive...), {} without systemd."""
    env = session_env(environ, os.getuid() if uid is None else uid, run_user_dir)
    try:
        done = run(["systemctl", "--user", "is-active"] + list(names), timeout=30, env=env, check=False)
    except CommandError:
        return {}
    return dict(zip(names, (done.stdout or "").split()))


def read_crontab(run, env):
    """The user's crontab text, "" when there is none."""
    done = run(["crontab", "-l"], timeout=30, env=env, check=False)
    if done.returncode == 0:
        return done.stdout
    if "no crontab" in (done.stderr or "").lower():
        return ""
    raise CommandError(["crontab", "-l"], done.returncode, done.stderr)


def _write_crontab(run, env, layout, old, new):
    backup = os.path.join(layout.host_work, "crontab.bak")
    fsutil.atomic_write(backup, old)
    run(["crontab", "-"], timeout=30, env=env, input=new)
    return backup


def _install_cron(specs, layout, run, env, say, inputs, proc_root, kill):
    try:
        old = read_crontab(run, env)
    except CommandError as exc:
        raise ForeverError(
            "neither systemd --user nor crontab can be used here (%s). Keep the programs running some other "
            "way, e.g. `nohup %s &` in a tmux session, or ask your admins how to run a long-lived user "
            "process on this node." % (exc, " ".join(shlex.quote(str(a)) for a in specs[0].argv) if specs else ""))
    new = merge_crontab(old, cron_lines(specs, layout), layout, [s.name for s in specs])
    written, backups = [], []
    if new != old:
        backups.append(_write_crontab(run, env, layout, old, new))
        written.append("crontab")
        say("crontab: added lines for %s; previous table kept in %s" % (", ".join(s.name for s in specs), backups[0]))
    else:
        say("crontab already has the lines for %s" % ", ".join(s.name for s in specs))
    note = ("cron runs each unit at reboot and every minute; a run that finds the previous one still "
            "going exits at once (flock).")
    say(note)
    started, restarted, unchanged, children = [], [], [], []
    for spec in specs:
        value = fingerprint(shell_command(spec, layout), inputs.get(spec.name))
        running = lock_holders(cron_lock(layout, spec.name), proc_root)
        if running and _recorded(layout, spec.name) == value:
            unchanged.append(spec.name)
            continue
        if running:
            stop_cron_run(layout, spec.name, proc_root, kill, say)
            restarted.append(spec.name)
        else:
            started.append(spec.name)
        # Started now rather than by cron within a minute, so `config` can check it came up.
        children.append((spec, start_now(spec, layout, env)))
        _record(layout, spec.name, value)
    _say_actions(say, "cron", started, restarted, unchanged)
    for problem in watch_start(children, layout):
        say(problem)
    return Report("cron", written, backups, [note], started, restarted)


def cron_env(environ):
    """The bare environment cron gives a job: what a program started by hand must live with too."""
    env = {k: environ[k] for k in ("HOME", "LOGNAME", "USER") if environ.get(k)}
    env.update(SHELL="/bin/sh", PATH="/usr/bin:/bin")
    return env


def start_now(spec, layout, environ):
    """Run a cron line's command now, detached and in cron's environment; returns the Popen."""
    return subprocess.Popen(["/bin/sh", "-c", shell_command(spec, layout)], cwd="/", env=cron_env(environ),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def watch_start(children, layout, seconds=START_CHECK_SECONDS, clock=time.monotonic, sleep=time.sleep):
    """One line per started program that exited within `seconds`, with the end of its log."""
    deadline = clock() + seconds
    waiting = list(children)
    problems = []
    while waiting:
        for spec, child in list(waiting):
            code = child.poll()
            if code is not None:
                waiting.remove((spec, child))
                if code == 1 and lock_holders(cron_lock(layout, spec.name)):
                    continue    # flock -n: a copy that cron started a moment ago holds the lock
                tail = [line for line in slurm_output.tail(spec.log_path, 0, 16384) if line.strip()][-3:]
                problems.append("%s stopped at once (exit %d)%s" % (
                    spec.name, code, "; %s ends with:\n    %s" % (spec.log_path, "\n    ".join(tail)) if tail else ""))
        if not waiting or clock() >= deadline:
            break
        sleep(0.1)
    return problems


def stop_cron_run(layout, name, proc_root="/proc", kill=os.kill, say=None, seconds=STOP_SECONDS,
                  clock=time.monotonic, sleep=time.sleep):
    """SIGTERM the cron-started program and its flock, SIGKILL what is left after `seconds`."""
    lock = cron_lock(layout, name)
    pids = lock_holders(lock, proc_root)
    for pid in pids:
        try:
            kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    if pids and say:
        say("stopped %s (pid %s)" % (name, ", ".join(str(p) for p in pids)))
    deadline = clock() + seconds
    # No holder left in /proc is not yet a free lock (a process on its way out may still hold it), and
    # the next start's `flock -n` would then exit at once: wait until the lock can really be taken.
    while (lock_holders(lock, proc_root) or not _lock_free(lock)) and clock() < deadline:
        sleep(0.1)
    for pid in lock_holders(lock, proc_root):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def _lock_free(path):
    """Could `flock -n path` take the lock now? (the same flock(2) call, released at once)"""
    try:
        handle = open(path, "a")
    except OSError:
        return True         # no lock file: nothing can hold it
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def uninstall(names, layout, run, environ, say, uid=None, run_user_dir="/run/user", proc_root="/proc",
              kill=os.kill):
    """Stop and remove our units and crontab lines; .env, services and logs stay. -> list of what was removed."""
    env = session_env(environ, os.getuid() if uid is None else uid, run_user_dir)
    removed = []
    directory = unit_dir(env)
    # This root's units on this host, and an earlier version's units of this root (never another's).
    files = [(unit_name(layout, n), os.path.join(directory, unit_name(layout, n) + ".service")) for n in names]
    files += [(name, path) for name, path in sorted(legacy_unit_files(names, layout, directory).items())]
    present = [n for n, f in files if os.path.exists(f)]
    usable, why = systemd_usable(run, env)
    if present and usable:
        run(["systemctl", "--user", "disable", "--now"] + present, timeout=60, env=env, check=False)
    elif present:
        say("systemctl --user does not answer (%s); removing the unit files only" % why)
    for name, path in files:
        if os.path.exists(path):
            os.remove(path)
            removed.append(path)
            say("removed %s" % path)
    if present and usable:
        run(["systemctl", "--user", "daemon-reload"], timeout=60, env=env, check=False)
    removed += _uninstall_cron(names, layout, run, env, say, proc_root, kill)
    for name in names:
        try:
            os.remove(started_record(layout, name))
        except OSError:
            pass
    return removed


def _uninstall_cron(names, layout, run, env, say, proc_root, kill):
    try:
        old = read_crontab(run, env)
    except CommandError:
        return []  # no crontab command: nothing of ours can be there
    removed = []
    new = merge_crontab(old, [], layout, names)
    if new != old:
        backup = _write_crontab(run, env, layout, old, new)
        removed.append("crontab")
        say("removed our crontab lines; previous table kept in %s" % backup)
    for name in names:
        stop_cron_run(layout, name, proc_root, kill, say)
    return removed


def lock_holders(lock_path, proc_root="/proc"):
    """Pids with lock_path open: the cron-started flock and the program under it."""
    target = os.path.realpath(lock_path)
    pids = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(proc_root, entry, "fd")
        try:
            links = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
        except OSError:
            continue  # not ours, or gone
        if target in links:
            pids.append(int(entry))
    return sorted(pids)
