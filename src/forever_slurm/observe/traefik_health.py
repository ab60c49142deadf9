"""Is the Traefik on our ports ours and up: its pid, the sockets it listens on, its ping, and why not.

Readers only: /proc, a connect or bind test on loopback, one GET of the ping entrypoint, the tail of
Traefik's log. `status` and `config` share these so both tell the same story.
"""

import errno
import os
import re
import socket
from typing import NamedTuple, Optional

from . import joblog
from ..common import ports
from ..systems import httpget

_LISTEN = "0A"          # TCP state LISTEN in /proc/net/tcp
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
    return os.path.join(layout.work, "traefik.pid")


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


def listening_inodes(port, proc_root="/proc"):
    """{socket inode: owner uid} of the TCP sockets listening on `port`, any address, IPv4 and IPv6."""
    found = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc_root, "net", name)) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            try:
                if int(fields[1].rpartition(":")[2], 16) == port:
                    found[fields[9]] = int(fields[7])
            except ValueError:
                continue
    return found


def socket_inodes_of(pid, proc_root="/proc"):
    """Socket inodes the process has open (only readable for our own processes)."""
    fd_dir = os.path.join(proc_root, str(pid), "fd")
    inodes = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    return inodes


def port_free(host, port):
    """True when a listener could bind host:port now (SO_REUSEADDR, as Traefik's own listener uses)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        return True
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        sock.close()


def port_user(port, pid=None, proc_root="/proc"):
    """Who listens on port: "ours" (the given Traefik pid), "you", "uid N", or "" when nobody does."""
    listeners = listening_inodes(port, proc_root)
    if not listeners:
        return ""
    if pid is not None and set(listeners) & socket_inodes_of(pid, proc_root):
        return "ours"
    uids = sorted(set(listeners.values()))
    return "you" if uids == [os.getuid()] else "uid %s" % ",".join(str(u) for u in uids)


def free_port_near(host, port, avoid=(), span=200):
    """The first free port after `port` (skipping avoid), so a proposal stays in the same range."""
    for candidate in range(port + 1, min(65536, port + 1 + span)):
        if candidate not in avoid and port_free(host, candidate):
            return candidate
    return ports.free_port()


def ping(port, timeout=1.0):
    """"" when GET http://127.0.0.1:port/ping answers 200 within timeout (in all, however the answer
    trickles in), else what went wrong."""
    answer = httpget.fetch_all({"ping": httpget.Get("127.0.0.1", port, "/ping", body_bytes=64)}, timeout).get(
        "ping", httpget.Answer(None, "no answer within %ss" % timeout))
    if answer.status == 200:
        return ""
    if answer.status is not None:
        return "its ping answered HTTP %d %s" % (answer.status, answer.body.decode("utf-8", "replace").strip())
    if answer.refused:
        return "nothing answers its ping on 127.0.0.1:%d" % port
    if "within" in answer.detail:
        return "its ping on 127.0.0.1:%d did not answer within %ss" % (port, timeout)
    return "its ping on 127.0.0.1:%d failed: %s" % (port, answer.detail)


def last_error(layout, lines=200):
    """Traefik's last error in its log, as `<log> says: <message>`, or ""."""
    path = traefik_log(layout)
    for line in reversed(joblog.tail(path, lines)):
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
    web = port_user(conf.traefik_port, pid, proc_root)
    if pid is None:
        reasons = []
        if web and web != "ours":
            reasons.append("port %d is taken by %s" % (conf.traefik_port, _who(web)))
        ping_user = port_user(conf.traefik_ping_port, None, proc_root)
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
