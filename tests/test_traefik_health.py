"""observe/traefik_health: is the Traefik on our ports ours and up, read from a fake /proc, real sockets
and a local ping server."""

import http.server
import os
import socket
import threading

import pytest

from forever_slurm.common import ports, settings
from forever_slurm.observe import traefik_health

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


class FakeProc:
    """A /proc with the processes and listening sockets a test gives it."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "net"))
        self.rows = []

    def process(self, pid, argv, sockets=()):
        folder = os.path.join(self.root, str(pid))
        os.makedirs(os.path.join(folder, "fd"))
        with open(os.path.join(folder, "cmdline"), "wb") as handle:
            handle.write(b"\0".join(word.encode() for word in argv) + b"\0")
        for number, inode in enumerate(sockets):
            os.symlink("socket:[%s]" % inode, os.path.join(folder, "fd", str(number + 3)))

    def listen(self, port, inode, uid, state="0A", table="tcp"):
        self.rows.append((table, "%4d: 0100007F:%04X 00000000:0000 %s 00000000:00000000 00:00000000 00000000 %5d "
                                 "       0 %s 1 0000000000000000 100 0 0 10 0\n"
                          % (len(self.rows), port, state, uid, inode)))
        for name in ("tcp", "tcp6"):
            with open(os.path.join(self.root, "net", name), "w") as handle:
                handle.write(HEADER + "".join(row for t, row in self.rows if t == name))


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def layout(tmp_path):
    result = settings.Layout(str(tmp_path / "root"))
    result.make_dirs()
    return result


def write_pid(layout, pid):
    with open(traefik_health.pid_file(layout), "w") as handle:
        handle.write("%s\n" % pid)


def test_our_pid_is_believed_only_while_it_runs_a_traefik(layout, proc):
    assert traefik_health.our_pid(layout, proc.root) is None, "no pid file"
    write_pid(layout, 100)
    assert traefik_health.our_pid(layout, proc.root) is None, "no such process"
    proc.process(100, ["/usr/bin/sleep", "100"])
    assert traefik_health.our_pid(layout, proc.root) is None, "a reused pid"
    proc.process(200, ["/bin/bash", "/home/u/.pyenv/shims/traefik", "--configFile=x"])
    write_pid(layout, 200)
    assert traefik_health.our_pid(layout, proc.root) == 200
    write_pid(layout, "abc")
    assert traefik_health.our_pid(layout, proc.root) is None


def test_port_user_tells_ours_from_yours_from_another_users(proc):
    proc.listen(13013, "555", os.getuid())
    proc.listen(13014, "666", 4242)
    proc.listen(13015, "777", os.getuid(), state="01")       # an established connection, not a listener
    proc.process(300, ["traefik"], sockets=["555"])
    assert ports.listening_inodes(13013, proc.root) == {"555": os.getuid()}
    assert ports.port_user(13013, 300, proc.root) == "ours"
    assert ports.port_user(13013, None, proc.root) == "you"
    assert ports.port_user(13014, 300, proc.root) == "uid 4242"
    assert ports.port_user(13015, 300, proc.root) == ""


def test_port_free_and_free_port_near():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        assert not ports.port_free("127.0.0.1", taken)
        near = ports.free_port_near("127.0.0.1", taken - 1, avoid={taken - 1})
        assert near != taken and ports.port_free("127.0.0.1", near)
    finally:
        holder.close()
    assert ports.port_free("127.0.0.1", taken)


class Ping:
    def __init__(self, status):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status if self.path == "/ping" else 404)
                self.end_headers()
                self.wfile.write(b"OK" if status == 200 else b"not yet")

            def log_message(self, *args):
                pass
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_ping_says_what_went_wrong():
    good, bad = Ping(200), Ping(503)
    try:
        assert traefik_health.ping(good.port) == ""
        assert traefik_health.ping(bad.port) == "its ping answered HTTP 503 not yet"
    finally:
        good.close()
        bad.close()
    assert traefik_health.ping(good.port) == "nothing answers its ping on 127.0.0.1:%d" % good.port


def test_last_error_is_traefiks_own_words_with_their_time(layout):
    assert traefik_health.last_error(layout) == ""
    with open(traefik_health.traefik_log(layout), "w") as handle:
        handle.write('2026-01-02T03:04:05Z INF starting\n'
                     '2026-01-02T03:04:06Z ERR error="listen tcp :13013: bind: address \\"in\\" use"\n'
                     '2026-01-02T03:04:07Z INF still here\n')
    assert traefik_health.last_error(layout) == (
        '.work/log/traefik.log says (2026-01-02T03:04:06Z): listen tcp :13013: bind: address "in" use')


def test_check_without_our_traefik_names_who_holds_the_ports(layout, proc):
    conf = settings.load(layout)
    proc.listen(conf.traefik_port, "901", 4242)
    health = traefik_health.check(layout, conf, proc.root)
    assert health == traefik_health.Health(
        False, None, "Traefik is not running: port %d is taken by another user (uid 4242); no Traefik process "
                     "from %s is alive" % (conf.traefik_port, traefik_health.pid_file(layout)))
    assert health.as_dict() == {"running": False, "pid": None, "problem": health.problem}


def test_check_of_our_traefik_that_does_not_listen_yet(layout, proc):
    conf = settings.load(layout)
    proc.process(400, ["/opt/traefik"])
    write_pid(layout, 400)
    health = traefik_health.check(layout, conf, proc.root)
    assert health == traefik_health.Health(False, 400, "Traefik (pid 400) is not listening on port %d"
                                           % conf.traefik_port)


def test_check_of_our_traefik_that_listens_and_pings(layout, proc):
    ping = Ping(200)
    try:
        with open(layout.env_file, "w") as handle:
            handle.write("FS_TRAEFIK_PING_PORT=%d\n" % ping.port)
        conf = settings.load(layout)
        proc.process(500, ["traefik"], sockets=["1001"])
        proc.listen(conf.traefik_port, "1001", os.getuid())
        write_pid(layout, 500)
        assert traefik_health.check(layout, conf, proc.root) == traefik_health.Health(True, 500, "")
    finally:
        ping.close()
