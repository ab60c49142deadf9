"""Is the Traefik on our ports ours and up: its pid, the sockets it listens on, its ping, and why not.

Readers only: /proc, a connect or bind test on loopback, one GET of the ping entrypoint, the tail of
Traefik's log. `status` and `config` share these so both tell the same story.
"""

import os
import re
from typing import NamedTuple, Optional

from ..systems import slurm_output
from ..common import ports
from ..systems.traefik_ping import ping  # noqa: F401 (status and config ask it through here)

_ERROR_LINE = re.compile(r"\s(ERR|FTL|PNC)\s|level=(error|fatal|panic)")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-][0-9:]+)?")
_ERROR_TEXT = re.compile(r'error="((?:[^"\\]|\\.)*)"')


class Health(NamedTuple):
    running: bool           # our Traefik process is alive, listens on the web port and answers /ping
    pid: Optional[int]      # from .work/traefik.pid, when that process is alive
    problem: str            # "" when running, else one plain sentence (with Traefik's own words when known)

    def as_dict(self):
        return {"running": self.running, "pid": self.pid, "problem": self.problem}


def pid_file(layout):
    return layout.traefik_pid


def traefik_log(layout):
    return os.path.join(layout.log, "traefik.log")


def our_pid(layout, proc_root="/proc"):
    """The pid in .work/traefik.pid when that process is alive and is a Traefik, else None."""
    try:
        with open(pid_file(layout)) as handle:
            text = handle.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            head = handle.read(4096).split(b"\0")[:2]
    except OSError:
        return None     # gone (or not ours to see)
    # The pid outlives its Traefik when it is reused: believe it only while it runs a traefik
    # (argv[1] too: a wrapper script such as a pyenv shim runs as `bash .../traefik` before its exec).
    return pid if any(b"traefik" in os.path.basename(word) for word in head) else None


def last_error(layout, lines=200):
    """Traefik's last error in its log, as `<log> says: <message>`, or ""."""
    path = traefik_log(layout)
    for line in reversed(slurm_output.tail(path, lines)):
        if _ERROR_LINE.search(line):
            found = _ERROR_TEXT.search(line)
            message = found.group(1).replace('\\"', '"') if found else line.strip()
            stamp = _STAMP.match(line)    # an old error reads differently from one a second ago
            return "%s says%s: %s" % (os.path.relpath(path, layout.root),
                                      " (%s)" % stamp.group(0) if stamp else "", message)
    return ""


def check(layout, conf, proc_root="/proc", timeout=1.0):
    """Health of our Traefik for `conf`'s ports; never writes anything."""
    pid = our_pid(layout, proc_root)
    table = ports.listening_table(proc_root)
    web = ports.port_user(conf.traefik_port, pid, proc_root, table)
    if pid is None:
        reasons = []
        if web and web != "ours":
            reasons.append("port %d is taken by %s" % (conf.traefik_port, _who(web)))
        ping_user = ports.port_user(conf.traefik_ping_port, None, proc_root, table)
        if ping_user:
            reasons.append("its ping port %d is taken by %s" % (conf.traefik_ping_port, _who(ping_user)))
        reasons.append(last_error(layout) or "no Traefik process from %s is alive" % pid_file(layout))
        return Health(False, None, "Traefik is not running: " + "; ".join(r for r in reasons if r))
    if web != "ours":
        taken = " (port %d is taken by %s)" % (conf.traefik_port, _who(web)) if web else ""
        error = last_error(layout)
        return Health(False, pid, "Traefik (pid %d) is not listening on port %d%s%s" % (
            pid, conf.traefik_port, taken, "; " + error if error else ""))
    problem = ping(conf.traefik_ping_port, timeout)
    if problem:
        return Health(False, pid, "Traefik (pid %d) listens on port %d but %s" % (pid, conf.traefik_port, problem))
    return Health(True, pid, "")


def _who(user):
    return "another program of yours" if user == "you" else "another user (%s)" % user
