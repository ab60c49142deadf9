"""The ssh tunnel against a real private sshd on loopback, with a tiny HTTP backend standing in for Traefik."""

import http.server
import logging
import os
import stat
import subprocess
import threading
import time

import pytest

from forever_slurm import settings as settings_mod
from forever_slurm import sshsetup, sshtunnel
from forever_slurm.errors import ForeverError
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
    sup = sshsetup.tunnel_from_settings(settings, layout, probe_interval=0.5)
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


def test_the_tunnel_comes_back_by_itself_when_sshd_returns(root, backend, server):
    layout, settings = root
    marker = backend.marker.decode()
    with Running(sshsetup.tunnel_from_settings(settings, layout)) as sup:
        assert wait_for(lambda: fetch(settings.ssh_local_port) == marker, 20)
        server.stop()
        assert wait_for(lambda: fetch(settings.ssh_local_port, timeout=0.5) is None, 10)
        time.sleep(3)  # long enough for a few failed restarts, so the backoff is in play
        assert sup.state == "down"
        server.start()
        back = time.monotonic()
        assert wait_for(lambda: fetch(settings.ssh_local_port, timeout=0.5) == marker, 60, step=0.02), \
            "the tunnel did not come back within 60 s of sshd's return"
        seconds = time.monotonic() - back
        print("T1 seconds from sshd return to working tunnel: %.2f" % seconds)
        assert seconds < 10


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
    with caplog.at_level(logging.INFO, logger="forever_slurm.sshtunnel"):
        with Running(sup):
            assert wait_for(lambda: any("CHANGED" in r.getMessage() for r in caplog.records), 15)
            assert fetch(settings.ssh_local_port, timeout=0.5) is None


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

    def ask(prompt, default):
        if prompt.startswith("Added the line"):
            # The user pastes the printed line into authorized_keys on the login node.
            printed = [l for text in said for l in text.splitlines() if l.startswith("restrict,")]
            server.authorize(printed)
            return "yes"
        return default

    updates, argv = sshsetup.configure_ssh(settings_mod.load(layout), layout, ask, said.append,
                                           ["python3", "forever_slurm.pyz"])
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode) == 0o700
    text = "\n".join(said)
    assert 'restrict,port-forwarding,permitopen="127.0.0.1:%d" ssh-ed25519 ' % backend.port in text
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
