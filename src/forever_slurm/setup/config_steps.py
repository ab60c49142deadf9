"""`config` and `uninstall` step by step: each command's top function is the list of its steps, in order.

`config` on the login node: make the root, ask and write .env (configure), stage the services, write
Traefik's static config and find its binary (traefik_bin), install supervision (units), then check that
Traefik, the loop and the first jobs came up (startup_check). `config --ssh` on a web server: ask and
test the tunnel (sshsetup), write .env, install the tunnel's unit.
"""

import hashlib
import os
import socket
import sys
from collections import OrderedDict

from . import configure, startup_check, traefik_bin, units
from ..common import fsutil, services, settings as settings_mod
from ..systems import proc, traefik, traefik_files
from ..common.errors import ConfigError, ForeverError


# Variables the Slurm clients read that a site may set in the login shell (modules) but that
# systemd and cron do not have.
SLURM_CLIENT_VARIABLES = ("SLURM_CONF", "SLURM_CLUSTERS")
LOGIN_NODE_UNITS = ("forever-traefik", "forever-slurm")
WEB_SERVER_UNITS = ("forever-ssh-forward",)
UP_SECONDS = 30.0           # for Traefik and the loop to come up after the units start


def config_command(args, layout, say=None, wait_seconds=90.0, up_seconds=UP_SECONDS):
    """`config` (login node) or `config --ssh` (web server). Exit 1 when what it set up is not running."""
    prompter = configure.terminal_prompter()
    say = say or prompter.say
    ensure_root(layout, prompter, args.yes, say)
    layout = layout.with_first_host()
    if args.ssh:
        return config_ssh(args, layout, prompter, say)
    if getattr(args, "host_only", False):
        result = write_host_settings(args, layout, prompter, say)
    else:
        result = ask_and_write_env(args, layout, prompter, say)
    conf = settings_mod.load(layout)
    stage_services(layout, conf, result.services, say)
    binary = prepare_traefik(layout, conf, say)
    if args.no_install:
        say_how_to_start(layout, say)
        return 0
    report = install_supervision(layout, LOGIN_NODE_UNITS, say, unit_inputs(layout, conf, binary),
                                 extra_tools=(binary,))
    problems = (startup_check.wait_until_up(layout, conf, report, say, up_seconds)
                or startup_check.wait_for_first_backends(layout, conf, say, wait_seconds))
    return say_outcome(layout, report, problems, say)


def config_ssh(args, layout, prompter, say):
    """`config --ssh`: ask and test the tunnel, write .env, install the tunnel's unit."""
    from . import sshsetup
    forced = ssh_overrides(args, layout)
    conf = settings_mod.load(layout)
    layout.make_dirs()
    setup = sshsetup.configure_ssh(conf, layout, _ask_or_default(args, prompter), say,
                                   pyz_command(layout), tries=1 if args.yes else 3, forced=forced,
                                   assume_yes=args.yes)
    old, new = configure.env_texts(layout, setup.updates)
    if old == new:
        say("%s is unchanged." % layout.env_file)
    else:
        say_env_written(layout, configure.write_env(layout, setup.updates), say)
    if setup.failures:
        raise ForeverError("%s. Your answers are saved in %s; the tunnel was not %s. Fix that and run "
                           "`config --ssh` again." % ("; ".join(setup.failures), layout.env_file,
                                                      "started" if args.no_install else "installed"))
    if args.no_install:
        say("Not installing the unit (--no-install). Start the tunnel by hand:\n  %s"
            % " ".join(setup.tunnel_argv))
    else:
        install_supervision(layout, WEB_SERVER_UNITS, say, unit_inputs(layout, settings_mod.load(layout)))
    local = setup.updates["FS_SSH_LOCAL_PORT"]
    say("Next: point the web server at http://127.0.0.1:%s/<service>/ (try: curl http://127.0.0.1:%s/); "
        "the tunnel logs what it does to %s." % (local, local, os.path.join(layout.log, "tunnel.log")))
    return 0


def ssh_overrides(args, layout):
    """--set of `config --ssh` as {key: value}: only the keys it sets; --service belongs to the login node."""
    from . import sshsetup
    if args.service:
        raise ConfigError("--service %s: services run on the login node; run `config --service ...` there, "
                          "not with --ssh" % args.service[0])
    forced = configure.parse_overrides(args.set, configure.env_defaults(layout).keys)
    for key in forced:
        if key not in sshsetup.SSH_KEYS:
            raise ConfigError("--set %s: config --ssh sets only %s; run config without --ssh (on the login "
                              "node) for the others" % (key, ", ".join(sshsetup.SSH_KEYS)))
    return forced


# ---------------------------------------------------------------- the steps


def ask_and_write_env(args, layout, prompter, say):
    """The questions (or --yes/--set/--service), checked against the machine, written to .env."""
    own = settings_mod.host_values(layout, problems=[])
    result = configure.run_config(layout, prompter, overrides=args.set, service_overrides=args.service,
                                  assume_yes=args.yes, say=say,
                                  review=startup_check.port_review(layout, prompter, args.yes, say, skip=own))
    if own:
        say("On this host (%s), %s wins over .env for %s." % (layout.host, layout.host_env_file,
                                                              ", ".join(sorted(own))))
    return result


def write_host_settings(args, layout, prompter, say):
    """`config --host-only --set KEY=VALUE...`: this host's own values into .env.<host> (a port taken on
    this login node only), checked against the machine; nothing asked, .env untouched."""
    if args.service:
        raise ConfigError("--service %s: which services run is the same on every login node; run config "
                          "without --host-only for it" % args.service[0])
    if not args.set:
        raise ConfigError("--host-only writes only the --set keys into %s; pass --set KEY=VALUE, as in "
                          "--set FS_TRAEFIK_PORT=14013" % layout.host_env_file)
    forced = configure.parse_overrides(args.set, configure.env_defaults(layout).keys)
    current = {key: entry.value for key, entry in settings_mod.load_values(layout).items()}
    answers = startup_check.port_review(layout, prompter, args.yes, say)(dict(current, **forced))
    updates = OrderedDict((key, value) for key, value in answers.items()
                          if key in forced or value != current.get(key))
    old, new = configure.host_env_texts(layout, updates)
    backup = configure.write_host_env(layout, updates)
    if old == new:
        say("%s is unchanged." % layout.host_env_file)
    else:
        say("Wrote %s%s: on this host (%s) it wins over .env for %s." % (
            layout.host_env_file, " (previous kept as %s)" % os.path.basename(backup) if backup else "",
            layout.host, ", ".join(updates)))
    conf = settings_mod.load(layout)
    return configure.ConfigResult(answers, backup, configure.chosen_services(
        layout, settings_mod.format_service_list(conf.service_list), say), old != new)


def stage_services(layout, conf, definitions, say):
    """Copy each chosen service into .work, where the jobs and Traefik read it."""
    if not any(count.high for _, count in conf.service_list):
        say("! No service is chosen, so no job will run. Add one with `config` (or --service NAME=N).")
    layout.make_dirs()
    for definition in definitions:
        services.stage(layout, definition)


def prepare_traefik(layout, conf, say):
    """Write Traefik's static config and find (or download) its binary; returns the binary's path."""
    traefik_files.write_if_changed(layout.traefik_static, traefik.render_static(conf, layout), layout.staging_tmp)
    say("Traefik's static config: %s" % layout.traefik_static)
    binary = traefik_bin.ensure(conf.traefik_bin, layout, os.environ, say)
    say("Traefik: %s" % binary)
    return binary


def say_how_to_start(layout, say):
    command = " ".join(pyz_command(layout))
    say("Not installing units (--no-install). Start by hand:\n  %s traefik\n  %s run" % (command, command))


def install_supervision(layout, names, say, inputs=None, extra_tools=()):
    """Install and start the units `names` run from this .pyz; returns units' Report."""
    pyz = settings_mod.running_pyz()
    if not pyz:
        raise ForeverError("units run the .pyz: build it (make pyz) and run config from forever_slurm.pyz, "
                           "or use --no-install")
    passed_on = tuple((key, os.environ[key]) for key in SLURM_CLIENT_VARIABLES if os.environ.get(key))
    if os.environ.get("FOREVER_HOST"):
        passed_on += (("FOREVER_HOST", layout.host),)     # the units run as the host config ran as
    path = units.minimal_path(sys.executable, os.environ.get("PATH"), extra_tools)
    for tool, mine, theirs in units.path_differences(path, os.environ.get("PATH")):
        say("! The units would run %s where your shell runs %s; put %s's directory first on PATH (or load "
            "its module) and run config again." % (theirs or "no %s" % tool, mine, tool))
    specs = units.standard_specs(layout, sys.executable, pyz, which=names, path=path, extra_env=passed_on,
                                 machine=socket.gethostname())
    report = units.install_supervision(specs, layout, proc.run, os.environ, say, inputs=inputs)
    say("Supervision: %s (%s)" % (report.method, ", ".join(names)))
    return report


def say_outcome(layout, report, problems, say):
    """The status screen, and exit 1 with the reasons when something did not come up."""
    from ..observe import status
    say("")
    say(status.render(status.collect(layout)))
    if problems:
        say("")
        say("config wrote the settings and installed the units (%s), but: %s" % (report.method, "; ".join(problems)))
        return 1
    return 0


def say_env_written(layout, backup, say):
    say("Wrote %s%s." % (layout.env_file, " (previous kept as %s)" % os.path.basename(backup) if backup else ""))


def pyz_command(layout):
    """argv prefix that runs this same program again (for units, cron and jobs)."""
    pyz = settings_mod.running_pyz()
    if pyz:
        return [sys.executable, pyz, "--root", layout.root]
    return [sys.executable, "-m", "forever_slurm", "--root", layout.root]


def _ask_or_default(args, prompter):
    """The ask() of sshsetup.configure_ssh: the prompter's, or with --yes the default at once."""
    def ask(prompt, default, several=False):
        if args.yes:
            return default
        return prompter.ask(prompt, default, several=several)
    return ask


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


def uninstall_command(args, layout, say=print):
    """`uninstall`: stop and remove the units; say what stays and how to revoke the tunnel key."""
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
