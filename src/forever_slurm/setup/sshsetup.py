"""Sets up the web server's ssh tunnel: key, restricted authorized_keys line, host key on first contact.

`configure_ssh` is the interactive flow of `config --ssh`; it returns the .env updates, the tunnel
command and the connection tests that failed, and writes nothing but the key and our own known_hosts. `tunnel_from_settings` builds the
Supervisor that the `tunnel` command runs.
"""

import os
import shutil
import socket
import subprocess
import time
from typing import List, NamedTuple

from ..common import fsutil, ports, validate
from ..systems import proc
from ..tunnel import sshtunnel
from .configure import ConfigCancelled, until_valid
from ..common.errors import ConfigError, ForeverError

PLACEHOLDER_NODE = "my-login-node"


def known_hosts_path(layout):
    """Our own known_hosts: the user's ~/.ssh/known_hosts is neither trusted nor touched."""
    return os.path.join(layout.work, "ssh", "known_hosts")


def ensure_key(key_path, run=proc.run):
    """Return the public key text of key_path, generating an ed25519 key without passphrase if missing."""
    key_path = os.path.expanduser(key_path)
    key_dir = os.path.dirname(os.path.abspath(key_path))
    if not os.path.isdir(key_dir):
        fsutil.make_private_dir(key_dir)  # an existing one (maybe a home directory) keeps its mode
    if not os.path.exists(key_path):
        comment = "forever-slurm tunnel from %s" % socket.gethostname()
        run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", key_path])
    # ssh refuses a private key that others can read; fixing the mode is safe, the key stays the same.
    os.chmod(key_path, 0o600)
    try:
        # -P "" fails on a key with a passphrase, which an unattended tunnel cannot use.
        derived = run(["ssh-keygen", "-y", "-P", "", "-f", key_path]).stdout.strip()
    except ForeverError as exc:
        raise ConfigError("cannot use the key %s without a passphrase (%s). The tunnel runs unattended: "
                          "choose another key path and a new key is made there." % (key_path, exc), key_path)
    pub_path = key_path + ".pub"
    if os.path.exists(pub_path):
        with open(pub_path) as handle:
            text = handle.read().strip()
        if text.split()[:2] == derived.split()[:2]:
            return text
    # A missing or mismatched .pub would make us print a line for the wrong key; derive it afresh.
    fsutil.backup(pub_path)
    fsutil.atomic_write(pub_path, derived + "\n")
    return derived


# What the authorized_keys options refuse, checked against OpenSSH 9.2 (tests/e2e/test_tunnel.py).
# `restrict` alone blocks a terminal, agent and X11 forwarding but not commands, so:
#   command="/bin/false"  every session (a command, a shell over -T, sftp) runs /bin/false instead;
#                         `ssh -N` opens no session, so the forward is untouched;
#   permitopen            -L, -W and -D reach 127.0.0.1:<Traefik's port> only;
#   permitlisten          -R may only listen on 127.0.0.1:1, a privileged port a user cannot bind
#                         ("none" is rejected by OpenSSH 9.2 and disables the whole key).
FORWARD_ONLY = 'command="/bin/false",restrict,port-forwarding,permitopen="127.0.0.1:%d",permitlisten="127.0.0.1:1"'


def authorized_line(pubkey, remote_port):
    """The authorized_keys line that lets this key do one thing: forward to 127.0.0.1:remote_port."""
    pubkey = pubkey.strip()
    if not pubkey or "\n" in pubkey or len(pubkey.split()) < 2:
        raise ConfigError("not a public key: %r" % pubkey[:60])
    return "%s %s" % (FORWARD_ONLY % int(remote_port), pubkey)


def find_ssh(ssh_bin=None):
    found = ssh_bin or shutil.which("ssh")
    if not found:
        raise ConfigError("ssh was not found on PATH: install the OpenSSH client (Debian: apt-get install "
                          "openssh-client) or ask your admins.")
    return found


class Contact(NamedTuple):
    """One test connection: ssh logged in and forwarded; answered says whether Traefik answered."""
    node: str
    answered: bool
    stderr: List[str]
    runs_commands: bool = False     # the node let the key run a command: its line is not forward-only
    gaps: tuple = ()                # what else the node lets the key open (GAP_LISTEN, GAP_TUN, GAP_TUN_UNTESTED)


# What the forward-only line cannot refuse, checked against OpenSSH 9.2 (tests/e2e/test_tunnel.py):
# `port-forwarding`, which the -L needs, also allows a listener (-R) on permitlisten's 127.0.0.1:1, which
# only root may open, and a tun device (-w) where sshd has PermitTunnel set. No key option closes either.
GAP_LISTEN = "listen"
GAP_TUN = "tun"
GAP_TUN_UNTESTED = "tun-untested"   # opening a tun device needs root on this side too
_GAP_WORDS = {
    # (words of success, words of refusal) in `ssh -v` output
    GAP_LISTEN: (("remote forward success",), ("remote port forwarding failed",)),
    GAP_TUN: (("tunnel forward established",), ("Tunnel forwarding failed", "rejected tunnel device")),
}


def forward_only_gaps(ssh_bin, node, user, key_path, known_hosts, ssh_port=None, popen=subprocess.Popen,
                      timeout=15.0, clock=time.monotonic, sleep=time.sleep):
    """Which of the holes the authorized_keys line cannot close are open on node: tries each, once."""
    tries = {
        GAP_LISTEN: ["-v", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:1:127.0.0.1:9"],
        GAP_TUN: ["-v", "-o", "ExitOnForwardFailure=yes", "-o", "Tunnel=point-to-point", "-w", "any:any"],
    }
    gaps = []
    for gap, forward in sorted(tries.items()):
        argv = sshtunnel.ssh_argv(ssh_bin, node, user, key_path, known_hosts, 0, 0, ssh_port, forward=forward)
        ssh = sshtunnel.SshProcess(argv, popen, tail_lines=400)
        found = None
        try:
            deadline = clock() + timeout
            while found is None and clock() < deadline:
                lines = ssh.stderr_lines()
                opened, refused = _GAP_WORDS[gap]
                if any(w in line for line in lines for w in opened):
                    found = True
                elif any(w in line for line in lines for w in refused) or ssh.exited():
                    found = False
                else:
                    sleep(0.1)
            lines = ssh.stderr_lines()
        finally:
            ssh.stop()
        if found:
            gaps.append(gap)
        elif gap == GAP_TUN and any("Tunnel device open failed" in line for line in lines):
            gaps.append(GAP_TUN_UNTESTED)       # refused here, before the node was asked
    return tuple(gaps)


COMMAND_MARKER = "forever-slurm-key-ran-a-command"


def runs_commands(ssh_bin, node, user, key_path, known_hosts, ssh_port=None, run=proc.run):
    """True when node runs a command for this key: an older line, not forward-only, is installed there."""
    argv = sshtunnel.ssh_argv(ssh_bin, node, user, key_path, known_hosts, 0, 0, ssh_port,
                              command=["echo", COMMAND_MARKER])
    try:
        done = run(argv, timeout=30, check=False)
    except ForeverError:
        return False
    return COMMAND_MARKER in done.stdout


def ssh_failure(stderr, node, known_hosts, key_path, ssh_port=None, authorized=None):
    """The ForeverError for an ssh that could not log in, saying what to do next."""
    found = sshtunnel.diagnose(stderr, node, known_hosts, key_path, ssh_port, authorized)
    if found is None:
        return ForeverError("ssh to %s failed: %s" % (node, sshtunnel.summarize(stderr)))
    message, line = found
    if line is not None:
        return ForeverError(message, known_hosts, line)
    return ForeverError(message)


def contact(ssh_bin, node, user, key_path, known_hosts, remote_port, ssh_port=None, accept_new=False,
            authorized=None, timeout=20.0, popen=subprocess.Popen, probe=sshtunnel.http_probe,
            clock=time.monotonic, sleep=time.sleep, run=proc.run):
    """Open the real tunnel once on a spare local port; raise ForeverError if ssh cannot log in.

    accept_new records an unknown host key (first contact); a changed key is refused either way.
    """
    # A spare port, not FS_SSH_LOCAL_PORT: a running tunnel may hold that one. The ssh runs under
    # SshProcess (Popen) because `ssh -N` never exits by itself, which proc.run cannot wait out.
    local = ports.free_port()
    checking = "accept-new" if accept_new else "yes"
    argv = sshtunnel.ssh_argv(ssh_bin, node, user, key_path, known_hosts, local, remote_port, ssh_port,
                              host_key_checking=checking)
    ssh = sshtunnel.SshProcess(argv, popen)
    result = None
    try:
        deadline = clock() + timeout
        while clock() < deadline:
            if ssh.exited():
                break
            seen = probe(local)
            if seen != sshtunnel.PROBE_REFUSED:
                result = seen
                break
            sleep(0.2)
    finally:
        lines = ssh.stop()
    if result is None:
        if ssh.returncode() in (None, -15):  # still running when the time ran out: we stopped it
            raise ForeverError("ssh to %s did not set up the tunnel within %gs: %s"
                               % (node, timeout, sshtunnel.summarize(lines)))
        raise ssh_failure(lines, node, known_hosts, key_path, ssh_port, authorized)
    commands = runs_commands(ssh_bin, node, user, key_path, known_hosts, ssh_port, run)
    gaps = forward_only_gaps(ssh_bin, node, user, key_path, known_hosts, ssh_port, popen) if not commands else ()
    return Contact(node, result == sshtunnel.PROBE_OK, lines, commands, gaps)


def _ask_valid(ask, say, prompt, default, check, tries=5, several=False):
    """Ask until check(answer) returns a value (configure.until_valid); Enter keeps the default."""
    def answer():
        typed = ask(prompt, default, several=True) if several else ask(prompt, default)
        return check((default if typed is None or str(typed).strip() == "" else str(typed)).strip())
    return until_valid(answer, say, prompt, tries)


def _nodes(answer):
    nodes = validate.host_list(answer)
    if not nodes:
        raise validate.Invalid("give at least one login node name")
    return nodes


_user = validate.user_name


_port = validate.any_port          # the same checks as settings.load and the `config` prompts
_high_port = validate.port


def _yes(answer):
    """Only a yes runs the test; anything else skips it."""
    try:
        return validate.yes_no(answer)
    except validate.Invalid:
        return False


class SshSetup(NamedTuple):
    """What `config --ssh` found out; the caller writes .env and installs the unit (or not)."""
    updates: dict                # .env key -> value
    tunnel_argv: List[str]       # the command the unit runs
    failures: List[str]          # one line per login node whose connection test failed


class Link(NamedTuple):
    """How the web server logs in to a login node, as `config --ssh` tests it."""
    ssh_bin: str
    user: str
    key_path: str
    known_hosts: str
    remote_port: int        # Traefik's port on the login node
    ssh_port: int
    authorized: str         # the authorized_keys line printed for the key


def pinned_fingerprints(known_hosts, node, ssh_port, run=proc.run):
    """The host key fingerprints recorded for node in our known_hosts, as "ED25519 SHA256:..."."""
    done = run(["ssh-keygen", "-F", sshtunnel.host_pattern(node, ssh_port), "-l", "-f", known_hosts], check=False)
    found = []
    for text in done.stdout.splitlines():
        fields = text.split()
        if len(fields) >= 3 and not text.startswith("#"):
            found.append("%s %s" % (fields[1], fields[2]))
    return found


# The keys `config --ssh` sets (its --set may name only these): the tunnel's, and Traefik's port on the
# login node, which the tunnel forwards to.
SSH_KEYS = ("FS_SSH_LOGIN_NODE", "FS_SSH_USER", "FS_SSH_PORT", "FS_TRAEFIK_PORT", "FS_SSH_LOCAL_PORT",
            "FS_SSH_KEY_PATH")


def configure_ssh(settings, layout, ask, say, tunnel_argv_prefix, run=proc.run, ssh_bin=None,
                  contact=contact, tries=3, forced=None, assume_yes=False, port_holder=None):
    """The `config --ssh` dialogue; returns an SshSetup.

    ask(prompt, default, several=False) -> answer and say(text) do all the talking, so callers and tests
    drive it; several: the answer may be several words. tries: connection tests per login node (1
    without a person to fix things in between). forced: {key: value} from --set, taken instead of
    asking. port_holder(port) -> "" or who holds the local port (local_port_holder).
    """
    ssh_bin = find_ssh(ssh_bin)
    forced = forced or {}
    port_holder = port_holder or local_port_holder

    def value(key, prompt, default, check, several=False):
        if key in forced:
            try:
                answer = check(forced[key])
            except validate.Invalid as exc:
                raise ConfigError("--set %s=%s: %s" % (key, forced[key], exc))
            say("%s=%s (from --set)" % (key, forced[key]))
            return answer
        return _ask_valid(ask, say, prompt, default, check, several=several)

    default_nodes = " ".join(n for n in settings.ssh_login_nodes if n != PLACEHOLDER_NODE)
    nodes = value("FS_SSH_LOGIN_NODE", "Login node(s) running forever-slurm (several: separate them with "
                  "spaces, for failover)", default_nodes, _nodes, several=True)
    user = value("FS_SSH_USER", "User on the login node", settings.ssh_user, _user)
    ssh_port = value("FS_SSH_PORT", "ssh port of the login node", str(settings.ssh_port), _port)
    remote = value("FS_TRAEFIK_PORT", "Traefik's port on the login node", str(settings.traefik_port), _high_port)
    known_hosts = known_hosts_path(layout)
    local = _free_local_port(value, ask, say, str(settings.ssh_local_port), known_hosts, port_holder,
                             "FS_SSH_LOCAL_PORT" in forced or assume_yes)
    key_answer = value("FS_SSH_KEY_PATH", "ssh key for the tunnel (made if missing)",
                       settings.raw.get("FS_SSH_KEY_PATH") or settings.ssh_key_path, lambda a: a)
    key_path = os.path.abspath(os.path.expanduser(key_answer))
    fsutil.make_private_dir(os.path.dirname(known_hosts))

    made_key = not os.path.exists(key_path)
    pubkey = ensure_key(key_path, run=run)
    try:
        line = authorized_line(pubkey, remote)
        say("Add this line to ~/.ssh/authorized_keys of %s on %s. It lets this key open one forward, to "
            "127.0.0.1:%d there, and nothing else (no command, no shell, no file transfer, no other port, "
            "no listener):\n\n%s\n" % (user or "your user", " and ".join(nodes), remote, line))
        updates = {
            "FS_SSH_LOGIN_NODE": " ".join(nodes),
            "FS_SSH_USER": user,
            "FS_SSH_PORT": str(ssh_port),
            "FS_SSH_LOCAL_PORT": str(local),
            "FS_SSH_KEY_PATH": key_answer,
            "FS_TRAEFIK_PORT": str(remote),
        }
        link = Link(ssh_bin, user, key_path, known_hosts, remote, ssh_port, line)
        failures = []
        for node in nodes:
            failed = _test_node(ask, say, contact, link, node, tries, run)
            if failed:
                failures.append(failed)
    except (KeyboardInterrupt, ConfigCancelled):
        if made_key:
            raise ConfigCancelled("config --ssh cancelled; .env was not changed, but the new key %s (and "
                                  "its .pub) stays, for the next run" % key_path)
        raise ConfigCancelled("config --ssh cancelled; .env was not changed")
    return SshSetup(updates, list(tunnel_argv_prefix) + ["tunnel"], failures)


LOCAL_PROMPT = "Local port on this web server that forwards to it"


def _free_local_port(value, ask, say, default, known_hosts, port_holder, no_questions, tries=5):
    """FS_SSH_LOCAL_PORT once nothing but our own tunnel listens on it: a tunnel on a taken port had
    logged "up" (the probe reached the other program) and logged in again about once a second."""
    local = value("FS_SSH_LOCAL_PORT", LOCAL_PROMPT, default, _high_port)
    for _ in range(tries):
        holder = port_holder(local)
        if not holder or _our_tunnel(local, known_hosts):
            return local
        free = ports.free_port_near("127.0.0.1", local)
        problem = "FS_SSH_LOCAL_PORT=%d: 127.0.0.1:%d is in use by %s" % (local, local, holder)
        if no_questions:
            raise ConfigError("%s; pass --set FS_SSH_LOCAL_PORT=%d (free now) or stop what holds it"
                              % (problem, free))
        say("  ! %s; %d is free now." % (problem, free))
        local = _ask_valid(ask, say, LOCAL_PROMPT, str(free), _high_port)
    raise ConfigError("FS_SSH_LOCAL_PORT: no free port after %d tries" % tries)


def _our_tunnel(port, known_hosts, proc_root="/proc"):
    """Is port held by this root's own tunnel ssh (the one `config --ssh` is about to restart)?"""
    mark = os.fsencode(sshtunnel.known_hosts_option(known_hosts))
    for pid in ports.listening_pids(port, proc_root):
        try:
            with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
                if mark in handle.read().split(b"\0"):
                    return True
        except OSError:
            continue
    return False


def _test_node(ask, say, contact, link, node, tries, run):
    """Test the connection to node up to `tries` times; None when ssh logged in, else one summary line."""
    where = "%s@%s" % (link.user, node) if link.user else node
    reasons = []
    for _ in range(tries):
        answer = ask("Added the line on %s? Type yes to test the connection (no: skip the test)" % node, "yes")
        if not _yes(answer or "yes"):
            say("Skipped the test of %s; the tunnel will log what goes wrong." % node)
            return None
        before = _pinned_or_none(link.known_hosts, node, link.ssh_port, run)
        try:
            seen = contact(link.ssh_bin, node, link.user, link.key_path, link.known_hosts, link.remote_port,
                           link.ssh_port, accept_new=True, authorized=link.authorized)
        except ForeverError as exc:
            reasons.append(str(exc))
            # ssh records an unknown host key before it offers ours: say so even when the login failed.
            _say_pinned(say, before, node, link.known_hosts, link.ssh_port, run, only_new=True)
            say("The test failed: %s" % exc)
            continue
        _say_pinned(say, before, node, link.known_hosts, link.ssh_port, run)
        if seen.runs_commands:
            say("%s ran a command for this key: its ~/.ssh/authorized_keys still has an older line for it that "
                "is not forward-only. Replace every line with this key by the line above." % where)
            return ("%s lets the tunnel key run commands (an older authorized_keys line): replace it with the "
                    "printed line" % where)
        login_user = link.user or _local_user()
        for gap in seen.gaps:
            if gap != GAP_TUN_UNTESTED or login_user == "root":
                say("! " + gap_warning(gap, where, login_user))
        found = sshtunnel.diagnose(seen.stderr, node, link.known_hosts, link.key_path, link.ssh_port,
                                   link.authorized)
        if seen.answered:
            say("%s: the tunnel works and Traefik answers through it." % where)
        elif found:
            say("%s: ssh logs in, but %s" % (where, found[0]))
        else:
            say("%s: ssh logs in and forwards, but nothing answered on 127.0.0.1:%d there yet. "
                "Start forever-slurm on the login node; the tunnel will pick it up." % (where, link.remote_port))
        return None
    times = "once" if len(reasons) == 1 else "%d times" % len(reasons)
    summary = "the connection test of %s failed %s: %s" % (where, times, _first_sentences(reasons[-1]))
    if len(reasons) > 1:
        say("Giving up on %s after %d tries." % (node, len(reasons)))
    return summary


def _local_user():
    """The user ssh logs in as when FS_SSH_USER is empty: this one."""
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return ""


def gap_warning(gap, where, user):
    """What config --ssh says about a hole the forward-only line leaves open on a login node."""
    if gap == GAP_LISTEN:
        return ("%s lets this key open a listener on its 127.0.0.1:1 (ssh -R), because %s may listen on a port "
                "below 1024 there. authorized_keys options cannot refuse it while they allow the forward. Log "
                "in as an unprivileged user for the tunnel (FS_SSH_USER), or ask the admins for "
                "`AllowTcpForwarding local` (or `PermitListen none`) in a Match block for this user."
                % (where, user or "the login user"))
    if gap == GAP_TUN:
        return ("%s lets this key open a tun device (ssh -w: a network link into the login node), because its "
                "sshd sets PermitTunnel and %s may create one. authorized_keys options cannot refuse it while "
                "they allow the forward. Ask the admins for `PermitTunnel no` (the default), or log in as an "
                "unprivileged user." % (where, user or "the login user"))
    return ("Could not test whether %s lets this key open a tun device (ssh -w needs root on this machine to "
            "try). It can only where the login node's sshd sets PermitTunnel (off by default) and %s may "
            "create a tun device there (root can)." % (where, user or "the login user"))


def _first_sentences(message):
    """A message's first line without a trailing "do this:" lead-in to the lines that followed it."""
    first = message.splitlines()[0] if message else ""
    if first.endswith(":") and ". " in first:
        first = first[:first.rindex(". ") + 1]
    return first.rstrip(".")


def _pinned_or_none(known_hosts, node, ssh_port, run):
    try:
        return pinned_fingerprints(known_hosts, node, ssh_port, run) if os.path.exists(known_hosts) else []
    except ForeverError:
        return None


def _say_pinned(say, before, node, known_hosts, ssh_port, run, only_new=False):
    """Show the host key the tunnel now trusts, so the user can compare it with what the admins publish.

    before: the fingerprints recorded before this contact (None: unknown)."""
    prints = _pinned_or_none(known_hosts, node, ssh_port, run)
    if not prints:
        return
    new = before is not None and prints != before
    if only_new and not new:
        return
    say("%s the host key of %s: %s. The tunnel accepts only this key; compare it with the fingerprint "
        "its admins publish (on the login node: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)."
        % ("Recorded" if new else "Already recorded", node, ", ".join(prints)))


def local_port_holder(port, proc_root="/proc"):
    """"" when ssh could listen on 127.0.0.1:port now, else who holds it (for the log and config --ssh)."""
    if ports.port_free("127.0.0.1", port):
        return ""
    pids = ports.listening_pids(port, proc_root)
    if pids:
        return ", ".join("pid %d (%s)" % (pid, ports.program_name(pid, proc_root)) for pid in pids)
    user = ports.port_user(port, None, proc_root)
    return {"you": "another program of yours", "": "another program"}.get(user, "another user (%s)" % user)


def listens_on(pid, port, proc_root="/proc"):
    """Does process pid listen on port? True when /proc cannot tell (then any answer counts)."""
    listeners = ports.listening_inodes(port, proc_root)
    if not listeners:
        return True
    return bool(set(listeners) & ports.socket_inodes_of(pid, proc_root))


def tunnel_from_settings(settings, layout, pacing=sshtunnel.Pacing(), popen=subprocess.Popen,
                         clock=time.monotonic, sleep=time.sleep, ssh_bin=None, probe=None):
    """The Supervisor for the `tunnel` command; raises ConfigError when `config --ssh` has not been run."""
    ssh_bin = find_ssh(ssh_bin)
    nodes = [n for n in settings.ssh_login_nodes if n != PLACEHOLDER_NODE]
    if not nodes:
        raise ConfigError("no login node configured (FS_SSH_LOGIN_NODE): run `config --ssh` first.",
                          layout.env_file)
    key_path = os.path.expanduser(settings.ssh_key_path)
    if not os.path.exists(key_path):
        raise ConfigError("the tunnel key %s does not exist: run `config --ssh` to make it." % key_path)
    known_hosts = known_hosts_path(layout)
    if not os.path.exists(known_hosts):
        raise ConfigError("no recorded host key for the login node in %s: run `config --ssh` once to "
                          "connect and record it." % known_hosts)
    ssh_port = settings.ssh_port
    local, remote = settings.ssh_local_port, settings.traefik_port
    path = settings.raw.get("FS_SSH_PROBE_PATH") or "/"
    if probe is None:
        def probe():
            return sshtunnel.http_probe(local, path)

    def argv_for_node(node):
        return sshtunnel.ssh_argv(ssh_bin, node, settings.ssh_user, key_path, known_hosts, local, remote,
                                  ssh_port)

    def reachable(node):
        # Short: a node that drops packets must not hold up the look at the next one.
        return sshtunnel.sshd_answers(node, ssh_port, timeout=0.5)

    def explain(stderr, node):
        return sshtunnel.diagnose(stderr, node, known_hosts, key_path, ssh_port)

    tunnel = sshtunnel.Tunnel(argv_for_node, nodes, probe, reachable=reachable, explain=explain,
                              describe="tunnel 127.0.0.1:%d -> :%d" % (local, remote),
                              local_port_user=lambda: local_port_holder(local),
                              forwards_through=lambda pid: listens_on(pid, local))
    return sshtunnel.Supervisor(tunnel, pacing, popen=popen, clock=clock, sleep=sleep)


def tunnel_command(layout):
    """The `tunnel` command: the Supervisor `config --ssh` set up, logging to .work/log/tunnel.log."""
    from ..common import logfiles, settings
    conf = settings.load(layout)
    layout.make_dirs()
    logfiles.to_file(layout, "tunnel.log")
    return sshtunnel.run_until_signalled(tunnel_from_settings(conf, layout)) or 0

