"""The ssh tunnel against a real private sshd on loopback, with a tiny HTTP backend standing in for Traefik."""

import functools
import http.server
import logging
import os
import shutil
import stat
import subprocess
import threading
import time

import pytest

from forever_slurm.common import settings as settings_mod
from forever_slurm.setup import sshsetup
from forever_slurm.tunnel import sshtunnel
from forever_slurm.common.errors import ForeverError
from harness import sshd as sshd_harness

pytestmark = pytest.mark.e2e

USER = "root"
NODE = "127.0.0.1"


class Backend:
    """An HTTP server on a free loopback port that counts requests and answers with its own marker."""

    def __init__(self, marker, port=0):
        self.marker = marker.encode()
        self.hits = 0
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                backend.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(backend.marker)))
                self.end_headers()
                self.wfile.write(backend.marker)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def fetch(port, timeout=2.0):
    """The body behind 127.0.0.1:port, or None when nothing answered."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.fixture
def server(tmp_path):
    why = sshd_harness.missing()
    if why:
        pytest.skip(why)
    daemon = sshd_harness.Sshd(str(tmp_path / "sshd")).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def backend():
    b = Backend("traefik-stand-in-%d" % os.getpid())
    yield b
    b.close()


@pytest.fixture
def root(tmp_path, server, backend):
    """A forever-slurm root configured for the tunnel, with the key authorized and the host key recorded."""
    root = tmp_path / "root"
    root.mkdir()
    key = str(tmp_path / "keys" / "tunnel")
    (root / ".env").write_text("FS_SSH_LOGIN_NODE=%s\nFS_SSH_USER=%s\nFS_SSH_PORT=%d\nFS_SSH_KEY_PATH=%s\n"
                               "FS_TRAEFIK_PORT=%d\nFS_SSH_LOCAL_PORT=%d\n"
                               % (NODE, USER, server.port, key, backend.port, sshd_harness.free_port()))
    layout = settings_mod.Layout(str(root))
    settings = settings_mod.load(layout)
    line = sshsetup.authorized_line(sshsetup.ensure_key(key), backend.port)
    server.authorize([line])
    known_hosts = sshsetup.known_hosts_path(layout)
    os.makedirs(os.path.dirname(known_hosts), exist_ok=True)
    sshsetup.contact(sshsetup.find_ssh(), NODE, USER, key, known_hosts, backend.port, server.port,
                     accept_new=True)
    return layout, settings


class Running:
    """A Supervisor run in a thread, stopped for sure at the end."""

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.stop = threading.Event()
        self.thread = threading.Thread(target=supervisor.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.supervisor

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the supervisor did not stop"


def test_a_request_through_the_tunnel_reaches_the_backend(root, backend):
    layout, settings = root
    with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
        assert wait_for(lambda: fetch(settings.ssh_local_port) == backend.marker.decode(), 20), \
            "no answer through the tunnel"
        assert wait_for(lambda: sup.state == "up", 10)
    assert backend.hits >= 1
    assert fetch(settings.ssh_local_port, timeout=1) is None, "ssh still forwards after the supervisor stopped"


def test_traefik_down_behind_the_tunnel_is_told_apart_from_a_broken_tunnel(root, backend):
    layout, settings = root
    sup = sshsetup.tunnel_from_settings(settings, layout, sshtunnel.Pacing(probe_interval=0.5))
    with Running(sup):
        assert wait_for(lambda: sup.state == "up", 20)
        backend.close()
        assert wait_for(lambda: sup.state == "connected", 15), sup.state
        starts = sup.starts
        time.sleep(3)  # several probes get no answer: the healthy ssh must not be restarted
        assert sup.starts == starts and sup.state == "connected"
        again = Backend(backend.marker.decode(), port=backend.port)
        try:
            assert wait_for(lambda: sup.state == "up", 15)
            assert fetch(settings.ssh_local_port) == backend.marker.decode()
        finally:
            again.close()


def test_the_tunnel_comes_back_within_two_seconds_of_each_return_of_a_flapping_sshd(root, backend, server):
    layout, settings = root
    marker = backend.marker.decode()
    with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
        assert wait_for(lambda: fetch(settings.ssh_local_port) == marker, 20)
        recoveries = []
        for number in range(3):  # three 3 s outages, 3 s apart: the backoff grows meanwhile
            if number:
                time.sleep(3)
            server.stop()
            assert wait_for(lambda: fetch(settings.ssh_local_port, timeout=0.5) is None, 10)
            time.sleep(3)
            assert sup.state == "down"
            server.start()
            back = time.monotonic()
            assert wait_for(lambda: fetch(settings.ssh_local_port, timeout=0.5) == marker, 60, step=0.02), \
                "the tunnel did not come back within 60 s of sshd's return"
            recoveries.append(time.monotonic() - back)
        print("seconds from each sshd return to a working tunnel: %s" % " ".join("%.2f" % r for r in recoveries))
        assert max(recoveries) < 2.0, recoveries
        assert sup.delay > sup.pacing.backoff_initial, "the backoff never grew: the outages were not felt"


def test_a_login_node_that_drops_packets_is_passed_over_within_ten_seconds(root, backend, server):
    layout, _ = root
    env = layout.env_file
    with open(env) as handle:
        text = handle.read()
    with open(env, "w") as handle:
        handle.write(text.replace("FS_SSH_LOGIN_NODE=%s" % NODE, 'FS_SSH_LOGIN_NODE="127.0.0.2 %s"' % NODE))
    settings = settings_mod.load(layout)
    assert settings.ssh_login_nodes == ["127.0.0.2", NODE]
    hole = sshd_harness.Blackhole("127.0.0.2", server.port)
    try:
        started = time.monotonic()
        with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
            assert wait_for(lambda: fetch(settings.ssh_local_port, timeout=0.5) == backend.marker.decode(), 30,
                            step=0.05), "no answer through the second login node"
            seconds = time.monotonic() - started
            assert sup.node == NODE
    finally:
        hole.close()
    print("seconds to a working tunnel past a node that drops packets: %.2f" % seconds)
    assert seconds < 10


def test_a_login_node_that_goes_silent_under_the_tunnel_is_left_within_ten_seconds(tmp_path, root, backend, server):
    layout, _ = root
    first = sshd_harness.Sshd(str(tmp_path / "sshd2"), server.port, "127.0.0.2")
    first.authorize(open(server.authorized_keys).read().splitlines())
    first.start()
    try:
        env = layout.env_file
        with open(env) as handle:
            text = handle.read()
        with open(env, "w") as handle:
            handle.write(text.replace("FS_SSH_LOGIN_NODE=%s" % NODE, 'FS_SSH_LOGIN_NODE="127.0.0.2 %s"' % NODE))
        settings = settings_mod.load(layout)
        sshsetup.contact(sshsetup.find_ssh(), "127.0.0.2", USER, settings.ssh_key_path,
                         sshsetup.known_hosts_path(layout), backend.port, server.port, accept_new=True)
        marker = backend.marker.decode()
        with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
            assert wait_for(lambda: sup.state == "up" and sup.node == "127.0.0.2", 20)
            assert fetch(settings.ssh_local_port) == marker
            first.freeze()  # sshd and its sessions stop answering; the TCP connections stay open
            silent = time.monotonic()
            assert wait_for(lambda: sup.node == NODE and fetch(settings.ssh_local_port, timeout=0.5) == marker,
                            40, step=0.05), "the tunnel did not move to the second login node"
            seconds = time.monotonic() - silent
    finally:
        first.stop()
    print("seconds from a login node going silent to a working tunnel via the next: %.2f" % seconds)
    assert seconds < 10


def test_each_login_node_is_reached_on_its_own_ssh_port_and_traefik_port(tmp_path, server, backend):
    """Two login nodes of this machine: sshd on two ports, Traefik on two ports (one taken on the second
    node: its .env.<host>). One authorized_keys line opens both Traefiks and nothing else; the tunnel
    forwards to the first node's, and to the second's when the first goes silent."""
    second_backend = Backend("second-login-node")
    second = sshd_harness.Sshd(str(tmp_path / "sshd2")).start()
    try:
        root = tmp_path / "web"
        root.mkdir()
        key = str(tmp_path / "keys" / "tunnel")
        words = ["%s:%d/%d" % (NODE, server.port, backend.port), "%s:%d/%d" % (NODE, second.port, second_backend.port)]
        (root / ".env").write_text('FS_SSH_LOGIN_NODE="%s"\nFS_SSH_USER=%s\nFS_SSH_KEY_PATH=%s\nFS_SSH_LOCAL_PORT=%d\n'
                                   % (" ".join(words), USER, key, sshd_harness.free_port()))
        layout = settings_mod.Layout(str(root))
        said = []

        def ask(prompt, default, several=False):
            if prompt.startswith("Added the line"):
                printed = [l for text in said for l in text.splitlines() if l.startswith('command="/bin/false"')]
                server.authorize(printed)
                second.authorize(printed)
                return "yes"
            return default

        setup = sshsetup.configure_ssh(settings_mod.load(layout), layout, ask, said.append, [])
        assert setup.failures == [], said
        line = sshsetup.authorized_line(sshsetup.ensure_key(key), backend.port, second_backend.port)
        assert line in "\n".join(said) and "\n".join(said).count("the tunnel works and Traefik answers") == 2
        other = Backend("neither-traefik")
        try:    # the line's permitopen names both Traefik ports and no other
            seen = sshsetup.contact(sshsetup.find_ssh(), NODE, USER, key, sshsetup.known_hosts_path(layout), other.port,
                                    second.port)
            assert not seen.answered and other.hits == 0
        finally:
            other.close()
        settings = settings_mod.load(layout)
        with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
            assert wait_for(lambda: fetch(settings.ssh_local_port) == backend.marker.decode(), 20)
            server.freeze()
            try:
                assert wait_for(lambda: fetch(settings.ssh_local_port, timeout=0.5) == "second-login-node", 40), \
                    "the tunnel did not move to the second login node's own Traefik port"
                assert sup.node == words[1]
            finally:
                server.thaw()
    finally:
        second.stop()
        second_backend.close()


def test_a_changed_host_key_is_refused_with_a_clear_message(root, server, caplog):
    layout, settings = root
    known_hosts = sshsetup.known_hosts_path(layout)
    with open(known_hosts) as handle:
        recorded = handle.read()
    server.stop()
    server.new_host_key()
    server.start()
    for accept_new in (False, True):  # not even the first-contact mode of `config --ssh` accepts it
        with pytest.raises(ForeverError) as caught:
            sshsetup.contact(sshsetup.find_ssh(), NODE, USER, settings.ssh_key_path, known_hosts,
                             settings.traefik_port, server.port, accept_new=accept_new)
        text = str(caught.value)
        assert "CHANGED" in text and known_hosts in text
        assert "ssh-keygen -R '[%s]:%d' -f '%s'" % (NODE, server.port, known_hosts) in text
    with open(known_hosts) as handle:
        assert handle.read() == recorded, "the changed key was written to known_hosts"

    sup = sshsetup.tunnel_from_settings(settings, layout)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        with Running(sup):
            assert wait_for(lambda: any("CHANGED" in r.getMessage() for r in caplog.records), 15)
            assert fetch(settings.ssh_local_port, timeout=0.5) is None


def _ssh_with_tunnel_key(settings, layout, server, *args):
    """An ssh argv that logs in with the tunnel key and nothing else (no agent, no ~/.ssh/id_*)."""
    return ["ssh", "-i", settings.ssh_key_path, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "UserKnownHostsFile=%s" % sshsetup.known_hosts_path(layout), "-o", "StrictHostKeyChecking=yes",
            "-o", "ControlPath=none", "-o", "ConnectTimeout=5", "-p", str(server.port)] + list(args)


def _run(argv, stdin="", timeout=30):
    return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def _forward_answers(argv, local, timeout=10):
    """Start a long-running ssh forward; the body fetched through 127.0.0.1:local (None), and ssh's stderr."""
    ssh = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           universal_newlines=True)
    try:
        listening = wait_for(lambda: ssh.poll() is not None or sshtunnel.tcp_reachable(NODE, local, 0.5), timeout)
        body = fetch(local, timeout=2) if listening and ssh.poll() is None else None
    finally:
        ssh.terminate()
        _, err = ssh.communicate(timeout=10)
    return body, err


def test_the_printed_line_lets_the_key_forward_to_traefik_and_do_nothing_else(root, server, backend, tmp_path):
    """The authorized_keys line `config --ssh` prints, against a real sshd: each way in is tried."""
    layout, settings = root
    ssh = functools.partial(_ssh_with_tunnel_key, settings, layout, server)
    target = "%s@%s" % (USER, NODE)
    marker = backend.marker.decode()

    # The one thing allowed: ssh -N -L to Traefik's port, and the same through stdio (-W).
    local = sshd_harness.free_port()
    body, err = _forward_answers(ssh("-N", "-o", "ExitOnForwardFailure=yes",
                                     "-L", "127.0.0.1:%d:127.0.0.1:%d" % (local, backend.port), target), local)
    assert body == marker, err
    through_stdio = _run(ssh("-W", "127.0.0.1:%d" % backend.port, target), "GET / HTTP/1.0\r\n\r\n")
    assert through_stdio.stdout.startswith("HTTP/1.0 200") and marker in through_stdio.stdout

    # No command, no shell over -T, no terminal, no sftp.
    command = _run(ssh(target, "id; echo ran-a-command"))
    assert command.returncode != 0 and "ran-a-command" not in command.stdout and "uid=" not in command.stdout
    shell = _run(ssh("-T", target), "id\necho got-a-shell\n")
    assert shell.returncode != 0 and "got-a-shell" not in shell.stdout and "uid=" not in shell.stdout
    terminal = _run(ssh("-tt", target), "echo got-a-terminal\nexit\n")
    assert terminal.returncode != 0 and "got-a-terminal" not in terminal.stdout
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web server\n")
    copy = tmp_path / "copied.txt"
    batch = tmp_path / "sftp-batch"
    batch.write_text("get %s %s\n" % (secret, copy))
    sftp = _run(["sftp", "-b", str(batch), "-P", str(server.port)] + ssh()[:-2] + [target])
    assert sftp.returncode != 0 and not copy.exists(), sftp.stdout + sftp.stderr

    # No other port: not through -L, -W or -D (SOCKS), not even sshd's own.
    other = Backend("must-not-be-reached")
    try:
        local = sshd_harness.free_port()
        body, err = _forward_answers(ssh("-N", "-L", "127.0.0.1:%d:127.0.0.1:%d" % (local, other.port), target),
                                     local, timeout=5)
        assert body is None and "administratively prohibited" in err
        for port in (other.port, server.port):
            stdio = _run(ssh("-W", "127.0.0.1:%d" % port, target), "GET / HTTP/1.0\r\n\r\n")
            assert stdio.returncode != 0 and "administratively prohibited" in stdio.stderr
        socks = sshd_harness.free_port()
        proxy = subprocess.Popen(ssh("-N", "-D", "127.0.0.1:%d" % socks, target), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        try:
            assert wait_for(lambda: sshtunnel.tcp_reachable(NODE, socks, 0.5), 10)
            fetched = _run(["curl", "-s", "-m", "5", "--socks5", "127.0.0.1:%d" % socks,
                            "http://127.0.0.1:%d/" % other.port]) if shutil.which("curl") else None
        finally:
            proxy.terminate()
            _, proxy_err = proxy.communicate(timeout=10)
        if fetched is not None:
            assert "must-not-be-reached" not in fetched.stdout
            assert "administratively prohibited" in proxy_err
        assert other.hits == 0
    finally:
        other.close()

    # No listener on the login node (-R), whatever port is asked for.
    for spec in ("127.0.0.1:%d" % sshd_harness.free_port(), "%d" % sshd_harness.free_port()):
        listen = spec.rsplit(":", 1)[-1]
        try:
            remote = _run(ssh("-N", "-o", "ExitOnForwardFailure=yes",
                              "-R", "%s:127.0.0.1:%d" % (spec, backend.port), target), timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("ssh -R %s kept running: the login node opened the listener" % spec)
        assert remote.returncode != 0 and "remote port forwarding failed" in remote.stderr, remote.stderr
        assert not sshtunnel.tcp_reachable(NODE, int(listen), 0.5)
    assert "but the request was denied" in server.log_tail(200)


def test_the_key_can_forward_to_the_permitted_port_only(root, server):
    layout, settings = root
    other = Backend("must-not-be-reached")
    try:
        seen = sshsetup.contact(sshsetup.find_ssh(), NODE, USER, settings.ssh_key_path,
                                sshsetup.known_hosts_path(layout), other.port, server.port)
    finally:
        other.close()
    assert not seen.answered
    assert other.hits == 0
    assert any("administratively prohibited" in line for line in seen.stderr), seen.stderr
    assert "permitopen" in sshtunnel.diagnose(seen.stderr, NODE, "/kh", "/k")[0]


def test_config_ssh_flow_makes_the_key_prints_the_line_and_records_the_host(tmp_path, server, backend):
    root = tmp_path / "fresh"
    root.mkdir()
    key = str(tmp_path / "newkeys" / "id")
    (root / ".env").write_text("FS_SSH_LOGIN_NODE=%s\nFS_SSH_USER=%s\nFS_SSH_PORT=%d\nFS_SSH_KEY_PATH=%s\n"
                               "FS_TRAEFIK_PORT=%d\n" % (NODE, USER, server.port, key, backend.port))
    layout = settings_mod.Layout(str(root))
    said = []

    def ask(prompt, default, several=False):
        if prompt.startswith("Added the line"):
            # The user pastes the printed line into authorized_keys on the login node.
            printed = [l for text in said for l in text.splitlines() if l.startswith('command="/bin/false",restrict,')]
            server.authorize(printed)
            return "yes"
        return default

    setup = sshsetup.configure_ssh(settings_mod.load(layout), layout, ask, said.append,
                                   ["python3", "forever_slurm.pyz"])
    updates, argv = setup.updates, setup.tunnel_argv
    assert setup.failures == []
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode) == 0o700
    text = "\n".join(said)
    assert sshsetup.authorized_line(sshsetup.ensure_key(key), backend.port) in text
    assert "Traefik answers through it" in text, text
    # Debian's ssh_config hashes known_hosts names, so ask ssh-keygen rather than grep.
    found = subprocess.run(["ssh-keygen", "-F", "[%s]:%d" % (NODE, server.port), "-f",
                            sshsetup.known_hosts_path(layout)], stdout=subprocess.PIPE,
                           universal_newlines=True, timeout=30)
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout
    assert updates["FS_SSH_PORT"] == str(server.port) and argv[-1] == "tunnel"
    assert backend.hits >= 1


def test_the_cli_config_ssh_then_tunnel_reach_the_login_node(tmp_path, server, backend):
    """What a user runs on the web server: `config --ssh` (answers taken from .env with --yes), then
    the `tunnel` command the unit runs; a request to the local port reaches the login node's port."""
    import signal
    import sys
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")
    root = tmp_path / "web"
    root.mkdir()
    key = str(tmp_path / "k" / "id")
    local = sshd_harness.free_port()
    (root / ".env").write_text("FS_SSH_LOGIN_NODE=%s\nFS_SSH_USER=%s\nFS_SSH_PORT=%d\nFS_SSH_KEY_PATH=%s\n"
                               "FS_TRAEFIK_PORT=%d\nFS_SSH_LOCAL_PORT=%d\n"
                               % (NODE, USER, server.port, key, backend.port, local))
    server.authorize([sshsetup.authorized_line(sshsetup.ensure_key(key), backend.port)])
    env = dict(os.environ, PYTHONPATH=src)
    cli = [sys.executable, "-m", "forever_slurm", "--root", str(root)]
    done = subprocess.run(cli + ["config", "--ssh", "--yes", "--no-install"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout
    assert "Traefik answers through it" in done.stdout
    assert "FS_SSH_PORT=%d" % server.port in (root / ".env").read_text()
    tunnel = subprocess.Popen(cli + ["tunnel"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        assert wait_for(lambda: fetch(local) == backend.marker.decode(), 20, 0.2), "no answer through the tunnel"
    finally:
        os.killpg(tunnel.pid, signal.SIGTERM)
        tunnel.wait(15)


# ---------------------------------------------------------------- `config --ssh` as a user runs it

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKES = os.path.join(TOP, "tests", "fake_bin")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    import sys
    out = str(tmp_path_factory.mktemp("pyz") / "forever_slurm.pyz")
    subprocess.run([sys.executable, os.path.join(TOP, "build_pyz.py"), "-o", out], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    return out


def _web_server(tmp_path, server, backend, authorize):
    """A web server's root and HOME with fake systemctl/crontab; the key authorized on sshd or not."""
    root = tmp_path / "web"
    root.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    key = str(tmp_path / "k" / "id")
    (root / ".env").write_text("FS_SSH_LOGIN_NODE=%s\nFS_SSH_USER=%s\nFS_SSH_PORT=%d\nFS_SSH_KEY_PATH=%s\n"
                               "FS_TRAEFIK_PORT=%d\nFS_SSH_LOCAL_PORT=%d\n"
                               % (NODE, USER, server.port, key, backend.port, sshd_harness.free_port()))
    pub = sshsetup.ensure_key(key)
    server.authorize([sshsetup.authorized_line(pub, backend.port)] if authorize else [])
    env = dict(os.environ, HOME=str(home), FAKE_STATE=str(tmp_path / "fake-state"),
               PATH=FAKES + os.pathsep + os.environ["PATH"])
    env.pop("PYTHONPATH", None)
    return root, home, env


def test_config_ssh_yes_with_a_failing_connection_test_exits_non_zero_and_installs_nothing(
        tmp_path, server, backend, pyz):
    import sys
    root, home, env = _web_server(tmp_path, server, backend, authorize=False)
    done = subprocess.run([sys.executable, pyz, "--root", str(root), "config", "--ssh", "--yes"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                          timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("forever-slurm: the connection test of root@127.0.0.1 failed once: ")
    assert "refused the key" in errors[0] and "was not installed" in errors[0]
    assert done.stdout.count("The test failed") == 1, "the same failing test was repeated"
    assert not (home / ".config" / "systemd").exists() and not (tmp_path / "fake-state" / "calls.log").exists()
    assert "success" not in done.stdout.lower() and "Traefik answers" not in done.stdout


def test_config_ssh_yes_installs_the_unit_shows_the_pinned_host_key_and_the_next_step(
        tmp_path, server, backend, pyz):
    import sys
    root, home, env = _web_server(tmp_path, server, backend, authorize=True)
    done = subprocess.run([sys.executable, pyz, "--root", str(root), "config", "--ssh", "--yes"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                          timeout=90)
    assert done.returncode == 0, done.stdout
    real = subprocess.run(["ssh-keygen", "-l", "-f", server.host_key + ".pub"], stdout=subprocess.PIPE,
                          universal_newlines=True, timeout=30).stdout.split()[1]
    assert "Recorded the host key of 127.0.0.1: ED25519 %s." % real in done.stdout
    assert "Traefik answers through it" in done.stdout
    unit_id = settings_mod.Layout(str(root)).unit_id
    assert (home / ".config" / "systemd" / "user" / ("forever-ssh-forward-%s.service" % unit_id)).exists()
    assert "Next: " in done.stdout and "tunnel.log" in done.stdout


DRIVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from forever_slurm import cli
sys.exit(cli.main(["--root", sys.argv[2], "config", "--ssh", "--no-install"]))
"""


def _terminal(root):
    import sys
    from fakes import Terminal  # one pty driver for every prompt test
    return Terminal([sys.executable, "-c", DRIVER, os.path.join(TOP, "src"), str(root)], cwd=str(root))


def test_a_person_gives_two_login_nodes_on_a_real_terminal(tmp_path, server, backend):
    root, _, _ = _web_server(tmp_path, server, backend, authorize=True)
    term = _terminal(root)
    try:
        term.expect("Login node(s) running forever-slurm (several: separate them with spaces, for failover) [")
        term.type("127.0.0.1 127.0.0.2\r")
        for _ in range(5):  # user, ssh port, Traefik's port, local port, key: keep what .env says
            term.expect("]: ")
            term.type("\r")
        term.expect("Added the line on 127.0.0.1?")
        term.type("yes\r")
        term.expect("Traefik answers through it")
        term.expect("Added the line on 127.0.0.2?")
        term.type("no\r")
        term.expect("Skipped the test of 127.0.0.2")
        status = term.finish()
    finally:
        term.kill()
    text = term.transcript()
    assert status == 0, text
    assert "must be quoted" not in text
    assert 'FS_SSH_LOGIN_NODE="127.0.0.1 127.0.0.2"' in (root / ".env").read_text()
    assert settings_mod.load(settings_mod.Layout(str(root))).ssh_login_nodes == ["127.0.0.1", "127.0.0.2"]


def test_ctrl_c_in_config_ssh_tells_about_the_new_key(tmp_path, server, backend):
    root, _, _ = _web_server(tmp_path, server, backend, authorize=True)
    key = tmp_path / "new-key"
    env_before = (root / ".env").read_text().replace(str(tmp_path / "k" / "id"), str(key))
    (root / ".env").write_text(env_before)
    term = _terminal(root)
    try:
        term.expect("Login node(s)")
        for _ in range(6):
            term.type("\r")
            term.expect("]: ")
        term.expect("Added the line on 127.0.0.1?")
        time.sleep(0.3)  # a ^C before Python waits for input is only seen at the next key press
        term.type("\x03")
        status = term.finish()
    finally:
        term.kill()
    text = term.transcript()
    assert status == 130, text
    assert "nothing was changed" not in text
    assert "the new key %s" % key in text and "stays" in text
    assert key.exists() and (root / ".env").read_text() == env_before


def test_config_ssh_refuses_a_login_node_that_still_has_an_older_line_allowing_commands(tmp_path, server, backend):
    root, _, _ = _web_server(tmp_path, server, backend, authorize=False)
    layout = settings_mod.Layout(str(root))
    settings = settings_mod.load(layout)
    pub = sshsetup.ensure_key(settings.ssh_key_path)
    # The line earlier versions printed: forwards fine, but also runs commands.
    server.authorize(['restrict,port-forwarding,permitopen="127.0.0.1:%d" %s' % (backend.port, pub)])
    said = []
    setup = sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default,
                                   said.append, [], tries=1)
    assert setup.failures == ["root@127.0.0.1 lets the tunnel key run commands (an older authorized_keys line): "
                              "replace it with the printed line"]
    assert any("Traefik answers through it" in s for s in said) is False
    # With the printed line in place, the same check passes.
    server.authorize([sshsetup.authorized_line(pub, backend.port)])
    again = sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default,
                                   said.append, [], tries=1)
    assert again.failures == [] and any("Traefik answers through it" in s for s in said)


# ---------------------------------------------------------------- what the line cannot refuse, and the local port

def _gaps(layout, settings, server):
    key = os.path.expanduser(settings.ssh_key_path)
    return sshsetup.forward_only_gaps(sshsetup.find_ssh(), NODE, USER, key, sshsetup.known_hosts_path(layout),
                                      server.port)


def test_as_root_the_line_still_allows_a_listener_on_port_1_and_config_ssh_finds_it(root, server, backend):
    """OpenSSH 9.2: `port-forwarding` (needed for the -L) lets root listen on permitlisten's 127.0.0.1:1;
    no authorized_keys option refuses that (permitlisten="none" disables the whole key)."""
    layout, settings = root
    assert USER == "root"
    assert _gaps(layout, settings, server) == (sshsetup.GAP_LISTEN,)    # sshd's default PermitTunnel no


def test_with_permit_tunnel_the_line_still_allows_a_tun_device_and_config_ssh_finds_it(tmp_path, backend):
    why = sshd_harness.missing()
    if why:
        pytest.skip(why)
    if not os.path.exists("/dev/net/tun") or os.geteuid() != 0:
        pytest.skip("a tun device needs /dev/net/tun and root on both ends")
    daemon = sshd_harness.Sshd(str(tmp_path / "sshd"), extra_config=["PermitTunnel yes"]).start()
    try:
        key = str(tmp_path / "keys" / "tunnel")
        daemon.authorize([sshsetup.authorized_line(sshsetup.ensure_key(key), backend.port)])
        known_hosts = str(tmp_path / "known_hosts")
        gaps = sshsetup.forward_only_gaps(sshsetup.find_ssh(), NODE, USER, key, known_hosts + "x", daemon.port)
        assert gaps == (), "an unknown host key is never accepted: nothing was tried"
        sshsetup.contact(sshsetup.find_ssh(), NODE, USER, key, known_hosts, backend.port, daemon.port,
                         accept_new=True)
        gaps = sshsetup.forward_only_gaps(sshsetup.find_ssh(), NODE, USER, key, known_hosts, daemon.port)
        assert set(gaps) == {sshsetup.GAP_LISTEN, sshsetup.GAP_TUN}
    finally:
        daemon.stop()


def test_a_frozen_sshd_accepts_tcp_but_does_not_count_as_answering(server):
    """SIGSTOP: the kernel still accepts connections into the backlog, so "accepts connections again;
    reconnecting now" had been logged every 5 s while each ssh waited out its ConnectTimeout."""
    assert sshtunnel.sshd_answers(NODE, server.port, timeout=2.0)
    server.freeze()
    try:
        assert sshtunnel.tcp_reachable(NODE, server.port, timeout=1.0)
        assert not sshtunnel.sshd_answers(NODE, server.port, timeout=1.0)
    finally:
        server.thaw()
    assert wait_for(lambda: sshtunnel.sshd_answers(NODE, server.port, timeout=1.0), 10)


def test_a_taken_local_port_is_not_logged_into_and_the_tunnel_is_not_called_up(root, backend, server, caplog):
    layout, settings = root
    squatter = Backend("someone-else", port=settings.ssh_local_port)
    logins_before = server.log_tail(10000).count("Accepted publickey")
    try:
        with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
            with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
                time.sleep(6)
                assert sup.state == "down" and not [h for h in sup.history if h[1] == "up"]
                assert server.log_tail(10000).count("Accepted publickey") == logins_before, "it logged in"
                said = [r.getMessage() for r in caplog.records]
                assert sum("the local port is taken by pid %d" % os.getpid() in line for line in said) == 1, said
                squatter.close()
                squatter = None
                assert wait_for(lambda: fetch(settings.ssh_local_port) == backend.marker.decode(), 70)
                assert wait_for(lambda: sup.state == "up", 10)
    finally:
        if squatter:
            squatter.close()


def test_config_ssh_applies_set_and_says_when_nothing_changed(tmp_path, server, backend, pyz):
    """--set with --ssh had been ignored, and "Wrote .env" said when nothing changed."""
    import sys
    root, home, env = _web_server(tmp_path, server, backend, authorize=True)
    local = sshd_harness.free_port()
    argv = [sys.executable, pyz, "--root", str(root), "config", "--ssh", "--yes", "--no-install",
            "--set", "FS_SSH_LOCAL_PORT=%d" % local]
    first = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           env=env, timeout=90)
    assert first.returncode == 0, first.stdout
    assert "FS_SSH_LOCAL_PORT=%d\n" % local in (root / ".env").read_text()
    assert "Wrote %s" % (root / ".env") in first.stdout
    again = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           env=env, timeout=90)
    assert again.returncode == 0 and "%s is unchanged." % (root / ".env") in again.stdout
    assert "Wrote" not in again.stdout
    taken = Backend("in-the-way")
    try:
        refused = subprocess.run(argv[:-1] + ["FS_SSH_LOCAL_PORT=%d" % taken.port], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=90)
    finally:
        taken.close()
    assert refused.returncode == 1
    assert "127.0.0.1:%d is in use by pid %d" % (taken.port, os.getpid()) in refused.stderr, refused.stderr
