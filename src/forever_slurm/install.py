"""`config` and `uninstall`: the steps after the questions (stage, Traefik, units) in one place."""

import os
import sys
import time

from . import configure, proc, services, settings as settings_mod, state, traefik
from .errors import ForeverError


# Variables the Slurm clients read that a site may set in the login shell (modules) but that
# systemd and cron do not have.
SLURM_CLIENT_VARIABLES = ("SLURM_CONF", "SLURM_CLUSTERS")


def config_command(args, layout, pyz_command, say=None, wait_seconds=90.0):
    """`config` (login node) or `config --ssh` (web server)."""
    prompter = configure.terminal_prompter()
    say = say or prompter.say
    if args.ssh:
        return _config_ssh(args, layout, pyz_command, prompter, say)
    result = configure.run_config(layout, prompter, overrides=args.set, service_overrides=args.service,
                                  assume_yes=args.yes, say=say)
    conf = settings_mod.load(layout)
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
    _install_units(layout, ("forever-traefik", "forever-slurm"), say)
    _wait_for_first_backends(layout, conf, say, wait_seconds)
    from . import status
    say("")
    say(status.render(status.collect(layout)))
    for name, count in conf.service_list:
        if count:
            say("try: curl http://127.0.0.1:%d/%s/" % (conf.traefik_port, name))
    return 0


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
        _install_units(layout, ("forever-ssh-forward",), say)
    say("Next: point the web server at http://127.0.0.1:%s/<service>/ (try: curl http://127.0.0.1:%s/); "
        "the tunnel logs what it does to %s." % (local, local, log))
    return 0


def _install_units(layout, names, say):
    from . import units
    pyz = settings_mod.running_pyz()
    if not pyz:
        raise ForeverError("units run the .pyz: build it (make pyz) and run config from forever_slurm.pyz, "
                           "or use --no-install")
    passed_on = tuple((key, os.environ[key]) for key in SLURM_CLIENT_VARIABLES if os.environ.get(key))
    specs = units.standard_specs(layout, sys.executable, pyz, which=names, path=os.environ.get("PATH"),
                                 extra_env=passed_on)
    report = units.install(specs, layout, proc.run, os.environ, say)
    for note in report.notes:
        say(note)
    say("Supervision: %s (%s)" % (report.method, ", ".join(names)))
    return report


def _wait_for_first_backends(layout, conf, say, wait_seconds, clock=time.time, sleep=time.sleep):
    """A progress line while the first jobs wait in the queue, until each service has a backend."""
    wanted = {name for name, count in conf.service_list if count}
    if not wanted:
        return
    deadline = clock() + wait_seconds
    line = ""
    while clock() < deadline:
        snap = state.load(layout.state_file)
        routed = {name for name, servers in snap.routes.items() if any(s.weight for s in servers)}
        pending = sum(1 for j in snap.jobs if j.name in wanted and j.pending)
        running = sum(1 for j in snap.jobs if j.name in wanted and j.running)
        line = "waiting for the first jobs: %d pending, %d running, %d/%d services routed" % (
            pending, running, len(routed & wanted), len(wanted))
        if sys.stdout.isatty():
            sys.stdout.write("\r" + line + " " * 4)
            sys.stdout.flush()
        if wanted <= routed:
            break
        sleep(2)
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    else:
        say(line)
    if line and clock() >= deadline:
        say("Jobs can wait in the queue for a while; `status` shows what Slurm says about them.")


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
