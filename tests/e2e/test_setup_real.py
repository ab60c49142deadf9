"""`config` and `status` through the built .pyz with the real Traefik: a taken port is seen, a changed port is applied,
two login nodes of one root and two roots of one user run side by side.

Supervision is cron (the fake systemctl has no bus, the fake crontab keeps its table in a file): config
starts the programs itself, so what runs is the real Traefik and the real loop, as cron would run them.
"""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from harness.net import free_port, http_get, wait_for

pytestmark = pytest.mark.e2e

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKES = os.path.join(TOP, "tests", "fake_bin")


@pytest.fixture(scope="module")
def built_pyz(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pyz") / "forever_slurm.pyz")
    subprocess.run([sys.executable, os.path.join(TOP, "build_pyz.py"), "-o", out], check=True,
                   stdout=subprocess.DEVNULL, timeout=120)
    return out


@pytest.fixture
def root(tmp_path, built_pyz):
    if not shutil.which("traefik") or not shutil.which("flock"):
        pytest.skip("needs traefik and flock(1) on PATH")
    path = tmp_path / "root"
    path.mkdir()
    shutil.copy2(built_pyz, str(path / "forever_slurm.pyz"))
    env = dict(os.environ, PATH=FAKES + os.pathsep + os.environ["PATH"], FAKE_STATE=str(tmp_path / "fake"),
               FAKE_SYSTEMD_DOWN="1", HOME=str(tmp_path))
    yield str(path), env
    subprocess.run([sys.executable, str(path / "forever_slurm.pyz"), "--root", str(path), "uninstall"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def pyz(root, env, *argv, timeout=120):
    done = subprocess.run([sys.executable, os.path.join(root, "forever_slurm.pyz"), "--root", root] + list(argv),
                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout)
    return done.returncode, done.stdout


def two_free_ports():
    web = free_port()
    ping = free_port()
    while ping == web:
        ping = free_port()
    return web, ping


def test_traefik_on_a_taken_port_is_reported_by_status_and_refused_by_config(root, tmp_path):
    root, env = root
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(5)
    taken = blocker.getsockname()[1]
    try:
        web, ping = two_free_ports()
        with open(os.path.join(root, ".env"), "w") as handle:
            handle.write("FS_TRAEFIK_PORT=%d\nFS_TRAEFIK_PING_PORT=%d\n" % (taken, ping))
        code, out = pyz(root, env, "traefik", timeout=60)   # what a unit runs: the real Traefik fails to bind
        assert code != 0
        code, out = pyz(root, env, "status")
        assert code == 3, out       # no loop runs here: status says so in its exit code too
        assert ("Traefik is not running: port %d is taken by another program of yours" % taken) in out
        assert "traefik.log says (" in out and "bind: address already in use" in out
        assert "curl" not in out

        code, out = pyz(root, env, "config", "--yes")
        assert code == 1
        assert "FS_TRAEFIK_PORT=%d: that port on 127.0.0.1 is in use by another program of yours" % taken in out
        assert "Traceback" not in out
    finally:
        blocker.close()


def test_a_changed_port_restarts_traefik_under_cron(root):
    root, env = root
    web, ping = two_free_ports()
    code, out = pyz(root, env, "config", "--yes", "--set", "FS_TRAEFIK_PORT=%d" % web,
                    "--set", "FS_TRAEFIK_PING_PORT=%d" % ping)
    print(out)
    assert code == 0, out
    assert "cron: started forever-traefik, forever-slurm" in out
    assert "Traefik: running (pid" in out and "Loop: running (pid" in out
    assert http_get(ping, "/ping") == (200, "OK")
    assert http_get(web, "/nothing/")[0] == 404      # Traefik itself answers on the web port
    # Every log is private (the README says 0600): Traefik's, its access log, the units' own output.
    log_dir = os.path.join(root, ".work", "log")
    assert wait_for(lambda: os.path.getsize(os.path.join(log_dir, "traefik-access.log")) > 0, 10)
    modes = {name: oct(os.stat(os.path.join(log_dir, name)).st_mode & 0o777)
             for name in ("traefik.log", "traefik-access.log", "forever-traefik.log", "forever-slurm.log",
                          "loop.log")}
    assert set(modes.values()) == {"0o600"}, modes

    new_web = free_port()
    while new_web in (web, ping):
        new_web = free_port()
    code, out = pyz(root, env, "config", "--yes", "--set", "FS_TRAEFIK_PORT=%d" % new_web)
    print(out)
    assert code == 0, out
    assert "cron: restarted forever-traefik, as its settings changed" in out
    assert "cron: forever-slurm already running with these settings" in out
    assert wait_for(lambda: http_get(new_web, "/nothing/")[0] == 404, 20)
    assert http_get(web, "/nothing/")[0] is None     # nothing is left on the old port

    code, out = pyz(root, env, "config", "--yes")
    assert code == 0, out
    assert "cron: forever-traefik, forever-slurm already running with these settings" in out
    crontab = open(os.path.join(env["FAKE_STATE"], "crontab")).read()
    path = crontab.split("PATH=")[1].split()[0]
    assert len(path) < 300 and os.environ["PATH"] not in path


def _traefik_pid(work):
    with open(os.path.join(work, "traefik.pid")) as handle:
        return int(handle.read())


def test_two_login_nodes_of_one_root_each_run_their_own_traefik_and_units(root):
    """Two "login nodes" on this machine (FOREVER_HOST), one root: the first keeps .work/, the second gets
    .work/hosts/login2/ and its port from .env.login2; config and uninstall on one never touch the other."""
    root, env = root
    one, two = dict(env, FOREVER_HOST="login1"), dict(env, FOREVER_HOST="login2")
    web1, ping1 = two_free_ports()
    web2, ping2 = two_free_ports()
    while {web2, ping2} & {web1, ping1}:
        web2, ping2 = two_free_ports()
    try:
        code, out = pyz(root, one, "config", "--yes", "--set", "FS_TRAEFIK_PORT=%d" % web1,
                        "--set", "FS_TRAEFIK_PING_PORT=%d" % ping1)
        assert code == 0, out
        first_pid = _traefik_pid(os.path.join(root, ".work"))
        with open(os.path.join(root, ".env")) as handle:
            shared_env = handle.read()

        # login2 with .env alone would take login1's ports: config says so and changes nothing.
        code, out = pyz(root, two, "config", "--yes")
        assert code == 1 and "in use by another program of yours" in out, out
        code, out = pyz(root, two, "config", "--yes", "--host-only", "--set", "FS_TRAEFIK_PORT=%d" % web2,
                        "--set", "FS_TRAEFIK_PING_PORT=%d" % ping2)
        print(out)
        assert code == 0, out
        assert "Wrote %s" % os.path.join(root, ".env.login2") in out
        assert "cron: started forever-traefik, forever-slurm" in out
        own = os.path.join(root, ".work", "hosts", "login2")
        assert wait_for(lambda: http_get(ping2, "/ping") == (200, "OK"), 20)
        assert http_get(ping1, "/ping") == (200, "OK") and _traefik_pid(os.path.join(root, ".work")) == first_pid
        assert _traefik_pid(own) != first_pid
        assert os.path.getsize(os.path.join(own, "log", "loop.log")) > 0
        with open(os.path.join(root, ".env")) as handle:
            assert handle.read() == shared_env
        with open(os.path.join(root, ".work", "first-host")) as handle:
            assert handle.read() == "login1\n"
        crontab = open(os.path.join(env["FAKE_STATE"], "crontab")).read()
        assert crontab.count(" @login2\n") == 4 and len(crontab.splitlines()) == 8

        code, out = pyz(root, two, "status")
        assert "(pid %d, port %d)" % (_traefik_pid(own), web2) in out, out

        code, out = pyz(root, two, "uninstall")
        assert code == 0, out
        assert wait_for(lambda: http_get(ping2, "/ping")[0] is None, 20)
        assert http_get(ping1, "/ping") == (200, "OK") and _traefik_pid(os.path.join(root, ".work")) == first_pid
        crontab = open(os.path.join(env["FAKE_STATE"], "crontab")).read()
        assert " @login2" not in crontab and len(crontab.splitlines()) == 4
    finally:
        for host_env in (two, one):
            pyz(root, host_env, "uninstall")
    assert http_get(ping1, "/ping")[0] is None


def test_a_second_root_beside_the_first_never_touches_it(root, tmp_path):
    """A test root beside the production root: its config and uninstall leave the first root's programs alone."""
    first, env = root
    second = str(tmp_path / "test root")
    os.mkdir(second)
    shutil.copy2(os.path.join(first, "forever_slurm.pyz"), os.path.join(second, "forever_slurm.pyz"))
    web1, ping1 = two_free_ports()
    web2, ping2 = two_free_ports()
    while {web2, ping2} & {web1, ping1}:
        web2, ping2 = two_free_ports()
    try:
        code, out = pyz(first, env, "config", "--yes", "--set", "FS_TRAEFIK_PORT=%d" % web1,
                        "--set", "FS_TRAEFIK_PING_PORT=%d" % ping1)
        assert code == 0, out
        pid = _traefik_pid(os.path.join(first, ".work"))
        code, out = pyz(second, env, "config", "--yes", "--set", "FS_TRAEFIK_PORT=%d" % web2,
                        "--set", "FS_TRAEFIK_PING_PORT=%d" % ping2)
        assert code == 0, out
        assert "cron: started forever-traefik, forever-slurm" in out
        assert http_get(ping2, "/ping") == (200, "OK")
        code, out = pyz(second, env, "uninstall")
        assert code == 0, out
        assert wait_for(lambda: http_get(ping2, "/ping")[0] is None, 20)
        assert http_get(ping1, "/ping") == (200, "OK") and _traefik_pid(os.path.join(first, ".work")) == pid
    finally:
        pyz(second, env, "uninstall")
