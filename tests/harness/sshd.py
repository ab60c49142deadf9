"""A private OpenSSH server on a free loopback port, with its own host key and authorized_keys in one directory."""

import os
import shutil
import signal
import socket
import subprocess
import time

from .net import free_port  # noqa: F401  (tests use sshd.free_port too)

SSHD = "/usr/sbin/sshd"


def missing():
    """Why a private sshd cannot run here, or None."""
    if not os.path.exists(SSHD):
        return "%s is missing (Debian package openssh-server)" % SSHD
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "ssh or ssh-keygen is missing (Debian package openssh-client)"
    if not os.path.isdir("/run/sshd"):
        try:
            # sshd refuses to start without its privilege-separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as exc:
            return "cannot create /run/sshd: %s" % exc
    return None


def _children(pid):
    """Direct children of pid, read from /proc (sshd forks one process per connection)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def _descendants(pid):
    result = []
    todo = [pid]
    while todo and len(result) < 1000:
        for child in _children(todo.pop()):
            result.append(child)
            todo.append(child)
    return result


class Sshd:
    """One sshd -D we start and stop; stop() ends it and the sessions it forked, and nothing else."""

    def __init__(self, directory, port=None, host="127.0.0.1", extra_config=()):
        self.dir = directory
        self.host = host
        self.extra_config = list(extra_config)      # more sshd_config lines, e.g. "PermitTunnel yes"
        self.port = port or free_port()
        self.proc = None
        os.makedirs(directory, exist_ok=True)
        self.host_key = os.path.join(directory, "host_key")
        self.authorized_keys = os.path.join(directory, "authorized_keys")
        self.config = os.path.join(directory, "sshd_config")
        self.log = os.path.join(directory, "sshd.log")
        if not os.path.exists(self.host_key):
            self.new_host_key()
        if not os.path.exists(self.authorized_keys):
            self.authorize([])

    def new_host_key(self):
        """Replace the host key, as a reinstalled login node (or a man in the middle) would present."""
        for path in (self.host_key, self.host_key + ".pub"):
            if os.path.exists(path):
                os.remove(path)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.host_key],
                       check=True, timeout=30, stdout=subprocess.DEVNULL)

    def authorize(self, lines):
        with open(self.authorized_keys, "w") as handle:
            handle.write("".join(line.strip() + "\n" for line in lines))

    def _write_config(self):
        text = "\n".join([
            "Port %d" % self.port,
            "ListenAddress %s" % self.host,
            "HostKey %s" % self.host_key,
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "PidFile %s" % os.path.join(self.dir, "sshd.pid"),
            # The temp directory's modes would otherwise make sshd ignore authorized_keys.
            "StrictModes no",
            "UsePAM no",
            # As on a Debian login node: a key that is not forward-only could fetch files over sftp.
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ] + self.extra_config + [""])
        with open(self.config, "w") as handle:
            handle.write(text)

    def start(self, timeout=10.0):
        """Start sshd in the foreground (-D) so its pid is ours; wait until the port accepts."""
        self._write_config()
        # -D keeps sshd in the foreground: we hold its pid and never read it back from a file.
        self.proc = subprocess.Popen([SSHD, "-D", "-f", self.config, "-E", self.log],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited %s: %s" % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not listen on %s:%d within %gs" % (self.host, self.port, timeout))

    def stop(self):
        """Kill the listener and the sessions it forked (the tunnel's server side goes with them)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Freeze the listener first so no session is forked between listing and killing.
            os.kill(self.proc.pid, signal.SIGSTOP)
            victims = _descendants(self.proc.pid)
            self.proc.kill()
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self):
        """Stop sshd and its sessions answering, connections left open: a node that went silent."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self):
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum):
        for pid in [self.proc.pid] + _descendants(self.proc.pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=20):
        try:
            with open(self.log) as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""


class Blackhole:
    """A login node that silently drops packets, on loopback and without iptables.

    A listening socket that never accepts, with its accept queue filled: Linux then drops every new
    SYN, so a client's connect hangs until its own timeout, as against a firewalled or dead host.
    """

    def __init__(self, host, port):
        self.listener = socket.socket()
        self.listener.bind((host, port))
        self.listener.listen(0)
        self.fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect((host, port))
            except (BlockingIOError, OSError):
                pass
            self.fillers.append(filler)
        time.sleep(0.1)
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            return
        self.close()
        raise RuntimeError("%s:%d still accepts connections: cannot simulate a dropping node" % (host, port))

    def close(self):
        for sock in self.fillers + [self.listener]:
            sock.close()
