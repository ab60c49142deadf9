"""Command line: argparse wiring, one function per subcommand; the one place errors become exit codes."""

import argparse
import json
import os
import sys

from . import __version__
from .common import logfiles, settings as settings_mod
from .common.errors import ForeverError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="forever_slurm.pyz",
        description="Keep web services running on Slurm, behind Traefik, around the clock.")
    parser.add_argument("--version", action="version", version="forever-slurm %s" % __version__)
    parser.add_argument("--root", help="root directory (default: $FOREVER_ROOT, else the directory of the .pyz)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, summary, description):
        return sub.add_parser(name, help=summary, description=description)
    _add_running_commands(add)
    _add_setup_commands(add)
    _add_job_commands(add)
    return parser


def _add_running_commands(add):
    """What units, cron and people run on the login node: the loop, its view, Traefik."""
    p = add("run", "the reconcile loop (forever; --once for one look at Slurm)",
            "Keep SERVICE_LIST's jobs running: one squeue per look, submit, renew before the time limit, "
            "probe readiness and write Traefik's routes. Usually run by a unit or cron (see config).")
    p.add_argument("--once", action="store_true", help="one look; exit 1 when Slurm could not be observed")
    p.set_defaults(func=cmd_run)

    p = add("status", "services, jobs, routes and traffic at a glance",
            "What the loop last saw (.work/state.json), whether our Traefik answers, and the traffic of "
            "the last minutes. Asks Slurm nothing and changes nothing. Exit status: 0 the loop runs; 3 it "
            "does not (what is shown is what it last saw, marked stale: nothing keeps the services); 1 "
            "nothing to show (no setup here; with --json an object {\"error\": ...}).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="SECONDS", help="refresh every SECONDS")
    p.set_defaults(func=cmd_status)

    p = add("check", "validate .env and every active service",
            "Read .env and each service in SERVICE_LIST (its .sub and Traefik template) and report every "
            "problem with its file and line.")
    p.set_defaults(func=cmd_check)

    p = add("traefik", "write Traefik's static config and run Traefik in the foreground",
            "Write .work/traefik-static.yml from .env, find (or download) Traefik and run it in its place "
            "(its pid goes to .work/traefik.pid). Usually run by a unit or cron.")
    p.add_argument("--print-config", action="store_true", help="only print the static config")
    p.set_defaults(func=cmd_traefik)


def _add_setup_commands(add):
    """Setting up and taking down a root, and the web server's tunnel."""
    p = add("config", "set up .env, services, Traefik and supervision (interactive)",
            "Ask for each setting and the services, write .env (keeping a backup), then install and start "
            "the units (systemd --user, else cron) and check that Traefik and the loop came up. Run it "
            "again to change anything: what changed is restarted. With --ssh, on a web server: set up "
            "the ssh tunnel to the login node.")
    p.add_argument("--yes", action="store_true", help="ask nothing: keep current values and defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a .env key")
    p.add_argument("--service", action="append", default=[], metavar="NAME=N",
                   help="run N instances of NAME (NAME=MIN-MAX: by demand, 0 removes it)")
    p.add_argument("--ssh", action="store_true", help="on a web server: set up the ssh tunnel to the login node")
    p.add_argument("--no-install", action="store_true", help="write the configuration, install no units")
    p.add_argument("--host-only", action="store_true",
                   help="write the --set keys into .env.<host>, this login node's own values over .env")
    p.set_defaults(func=cmd_config)

    p = add("uninstall", "remove the units or cron entries (keeps .env, services, logs)",
            "Stop and remove the systemd user units or crontab lines of this root. .env, services/ and the "
            "logs stay; queued or running jobs end at their time limit.")
    p.set_defaults(func=cmd_uninstall)

    p = add("tunnel", "supervise the ssh port forward to the login node (for a unit)",
            "On a web server: keep `ssh -N -L` to Traefik on the login node(s) in FS_SSH_LOGIN_NODE up, "
            "failing over between them. Usually run by a unit or cron (see config --ssh).")
    p.set_defaults(func=cmd_tunnel)


def _add_job_commands(add):
    """About jobs: their output, and the helpers a job's script calls."""
    p = add("logs", "the tail of a job's Slurm output (default: the newest job of each service)",
            "Print the end of a job's Slurm output file under .work/slurm-output, by job id or service name.")
    p.add_argument("target", nargs="?", help="a job id or a service name")
    p.add_argument("-n", "--lines", type=int, default=20)
    p.set_defaults(func=cmd_logs)

    p = add("port", "inside a job: print a free TCP port",
            "Print a TCP port that is free on this node now, for a job's server to listen on.")
    p.set_defaults(func=cmd_port)

    p = add("publish", "inside a job: publish this job's URL in its Slurm Comment",
            "Set this job's Comment to traefik,<service>,<url>, which is how the loop learns where to route.")
    p.add_argument("url", nargs="?", help="default: http://<hostname>:<port>")
    p.add_argument("--port", type=int, help="port of the server (builds the default URL)")
    p.set_defaults(func=cmd_publish)


def main(argv=None):
    standard_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logfiles.to_console(args.verbose)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `status | head`: the reader left; say nothing more.
        sys.stderr.close()
        return 0
    except ForeverError as exc:
        return _fail(str(exc), getattr(exc, "exit_code", 1))
    except OSError as exc:
        # A full disk or a folder that is not writable, met where no one expected it: one line, not a traceback.
        where = " %s:" % exc.filename if exc.filename else ""
        return _fail("%s %s; free some space, or check that this folder is yours and writable"
                     % (where.strip(), exc.strerror or exc), 1)


def _fail(message, code):
    print("forever-slurm: %s" % message, file=sys.stderr)
    logfiles.record_exit(message)
    return code


def standard_streams():
    """Closed stdin, stdout or stderr (`run 2>&-`, a unit or cron without them) become /dev/null:
    what would be written there goes nowhere instead of stopping the program (sys.stderr is None),
    and no file opened later lands on fd 0-2, where a print or a child's output would write into it."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False, errors="backslashreplace"))


# -- helpers ----------------------------------------------------------------------------------------
def _layout(args, must_exist=True):
    """The root's Layout for this host; a root that is missing (or a file) is refused before anything
    reads or creates it."""
    root = settings_mod.find_root(args.root)
    where = "--root" if args.root else "$FOREVER_ROOT" if os.environ.get("FOREVER_ROOT") else "the default root"
    if os.path.lexists(root) and not os.path.isdir(root):
        raise ForeverError("%s %s is not a directory; pass --root with your forever-slurm directory"
                           % (where, root))
    if must_exist and not os.path.isdir(root):
        raise ForeverError("%s %s does not exist; pass --root with your forever-slurm directory, or run "
                           "`forever_slurm.pyz --root %s config` to set one up there"
                           % (where, root, root))
    return settings_mod.Layout.for_host(root)


def _writing_layout(args):
    """(Layout, Settings) of a command that writes this host's files (run, traefik): the root's first
    host is recorded before, so that every writer agrees where the first host's files are; bad
    settings are refused before anything is written."""
    layout = _layout(args)
    conf = settings_mod.load(layout)
    return layout.with_first_host(), conf


def _set_up_layout(args):
    """A root that holds a forever-slurm setup (.env or .work), for commands that only read one."""
    layout = _layout(args)
    if not os.path.exists(layout.env_file) and not os.path.isdir(layout.work):
        raise ForeverError("%s has no forever-slurm setup (no .env, no .work); run `config` there, or pass "
                           "--root with the directory you set up" % layout.root)
    return layout


# -- subcommands ------------------------------------------------------------------------------------
def cmd_run(args):
    from .core import run
    return run.run_command(_writing_layout(args)[0], once=args.once)


def cmd_status(args):
    from .observe import status
    try:
        layout = _set_up_layout(args)
    except ForeverError as exc:
        if not args.json:
            raise
        # A script reading stdout gets an answer it can parse, not nothing.
        print(json.dumps({"error": str(exc), "root": settings_mod.find_root(args.root)}, sort_keys=True))
        return 1
    return status.show(layout, as_json=args.json, every=args.watch)


def cmd_check(args):
    from .observe import checks
    report = checks.check_root(_layout(args))
    for line in report.ok + report.problems:
        print(line)
    print(report.summary)
    return 1 if report.problems else 0


def cmd_traefik(args):
    from .setup import traefik_bin
    layout, conf = _writing_layout(args)
    return traefik_bin.run_in_place(layout, conf, print_only=args.print_config)


def cmd_config(args):
    from .setup import config_steps
    return config_steps.config_command(args, _layout(args, must_exist=False))


def cmd_uninstall(args):
    from .setup import config_steps
    return config_steps.uninstall_command(args, _layout(args))


def cmd_tunnel(args):
    from .setup import sshsetup
    return sshsetup.tunnel_command(_layout(args))


def cmd_logs(args):
    from .observe import joblog
    return joblog.show(_layout(args), args.target, args.lines)


def cmd_port(args):
    from .systems import jobside
    print(jobside.free_port())
    return 0


def cmd_publish(args):
    from .systems import jobside
    print(jobside.publish(args.url or jobside.url_for_port(args.port)))
    return 0
