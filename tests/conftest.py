"""Shared test set-up: src/ and tests/ on sys.path, and the fixtures many modules use: shim Slurm on
PATH or an in-process one, a temp root and its layout, a taken port, a fake Traefik. The doubles
themselves are in fakes.py."""

import os
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(TESTS)
sys.path.insert(0, os.path.join(TOP, "src"))
sys.path.insert(0, TESTS)

import fakes  # noqa: E402  (needs the paths above)
from forever_slurm.common import settings  # noqa: E402
from forever_slurm.observe import traefik_health  # noqa: E402


@pytest.fixture
def shim_state(tmp_path, monkeypatch):
    """Fake squeue/sbatch/scontrol/scancel first on PATH, with their state in a temp dir."""
    state_dir = tmp_path / "shim-state"
    state_dir.mkdir()
    monkeypatch.setenv("FS_SHIM_STATE", str(state_dir))
    monkeypatch.setenv("PATH", fakes.SHIMS + os.pathsep + os.environ["PATH"])
    for key in list(os.environ):
        if key.startswith(("SQUEUE_", "SBATCH_", "FS_SHIM_START", "FS_SHIM_TIME")):
            monkeypatch.delenv(key, raising=False)
    return state_dir


@pytest.fixture
def shim_slurm(shim_state):
    """The shim processes' cluster read and changed like a FakeSlurm (fakes.ShimSlurm)."""
    return fakes.ShimSlurm(shim_state)


@pytest.fixture
def root(tmp_path):
    """An empty forever-slurm root directory."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def fake_slurm():
    """An in-process Slurm with the shims' rules (fakes.FakeSlurm): the loop's tests use its client()."""
    return fakes.FakeSlurm()


@pytest.fixture
def layout(tmp_path):
    """The layout of an empty root, its folders made."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    result = settings.Layout(str(root))
    result.make_dirs()
    return result


@pytest.fixture
def taken():
    """A loopback port something else listens on."""
    listener = fakes.Listener()
    yield listener.port
    listener.close()


@pytest.fixture
def fake_traefik(tmp_path, layout):
    """start(web, ping): a program named `traefik` on those ports, its pid where `pyz traefik` writes it."""
    started = []

    def start(web, ping):
        child = subprocess.Popen([fakes.write_fake_traefik(tmp_path / "bin"), str(web), str(ping)],
                                 stdout=subprocess.PIPE)
        started.append(child)
        assert child.stdout.readline().strip() == b"listening"
        with open(traefik_health.pid_file(layout), "w") as handle:
            handle.write("%d\n" % child.pid)
        return child
    yield start
    for child in started:
        child.kill()
        child.wait(timeout=10)


# A skipped test proves nothing. `make test` must run every test, so a skip fails the run unless
# the test is marked `optional` (it checks something a machine may lack for good, such as Python 2.7
# for the polite refusal) or FS_ALLOW_SKIPS=1 is set on a developer's machine.
def pytest_configure(config):
    config.addinivalue_line("markers", "optional: may be skipped without failing the run")


def _required_skips(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    return [report for report in skipped if "optional" not in report.keywords]


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and _required_skips(session) and os.environ.get("FS_ALLOW_SKIPS") != "1":
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    required = _required_skips(terminalreporter._session) if hasattr(terminalreporter, "_session") else []
    if required and os.environ.get("FS_ALLOW_SKIPS") != "1":
        terminalreporter.write_line("FAILING: %d required test(s) were skipped (see the SKIPPED lines above); "
                                    "install what they name (make provision) or set FS_ALLOW_SKIPS=1"
                                    % len(required), red=True)
