"""TCP ports on this machine: a free one (ask the kernel), whether one is free, and who listens on one."""

import errno
import os
import socket

_LISTEN = "0A"        # TCP_LISTEN in /proc/net/tcp


def free_port(host="127.0.0.1"):
    """A port the kernel reports free on host right now; whoever needs it should bind it at once
    (between this call and that bind another program may take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host.strip("[]"), 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


def listening_table(proc_root="/proc"):
    """{port: {socket inode: owner uid}} of every listening TCP socket, IPv4 and IPv6: one read of
    /proc/net/tcp{,6}, which is slow where thousands of connections are open."""
    table = {}
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
                table.setdefault(int(fields[1].rpartition(":")[2], 16), {})[fields[9]] = int(fields[7])
            except ValueError:
                continue
    return table


def listening_inodes(port, proc_root="/proc", table=None):
    """{socket inode: owner uid} of the TCP sockets listening on `port`, any address, IPv4 and IPv6."""
    return dict((listening_table(proc_root) if table is None else table).get(port, {}))


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


def listening_pids(port, proc_root="/proc"):
    """Pids of our own processes that listen on port (others' fds cannot be read)."""
    inodes = set(listening_inodes(port, proc_root))
    if not inodes:
        return []
    found = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit() and socket_inodes_of(entry, proc_root) & inodes:
            found.append(int(entry))
    return sorted(found)


def program_name(pid, proc_root="/proc"):
    """The name of process pid's program (/proc/<pid>/comm), or "?"."""
    try:
        with open(os.path.join(proc_root, str(pid), "comm")) as handle:
            return handle.read().strip() or "?"
    except (OSError, UnicodeDecodeError):
        return "?"


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


def port_user(port, pid=None, proc_root="/proc", table=None):
    """Who listens on port: "ours" (the given Traefik pid), "you", "uid N", or "" when nobody does.
    table: a listening_table() already read, for several ports."""
    listeners = listening_inodes(port, proc_root, table)
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
    return free_port()
