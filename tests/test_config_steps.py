"""`config` after the questions: root checks, Traefik's ports and health, the start-up wait, honest exits."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from forever_slurm import cli
from forever_slurm.setup import config_steps, configure, startup_check, units
from forever_slurm.common import ports, settings
from forever_slurm.observe import traefik_health
from forever_slurm.common.errors import ForeverError

from fakes import FAKE_BIN, Clock, Script, free_port, no_input, traefik_ports_conf

# The fixtures layout, taken and fake_traefik are conftest.py's.


# ---------------------------------------------------------------- is the Traefik ours and up

def test_no_traefik_says_so_with_the_last_error_of_its_log(layout, taken):
    conf = traefik_ports_conf(layout, taken, free_port())
    with open(traefik_health.traefik_log(layout), "w") as handle:
        handle.write('2026-12-02T16:47:19Z INF Traefik version 3.7.15\n'
                     '2026-12-02T16:47:19Z ERR Command error error="command traefik error: listen tcp '
                     '127.0.0.1:%d: bind: address already in use"\n'
                     '2026-12-02T16:47:20Z INF shutting down\n' % taken)
    health = traefik_health.check(layout, conf)
    assert not health.running and health.pid is None
    assert health.problem.startswith("Traefik is not running: port %d is taken by another program of yours" % taken)
    assert health.problem.endswith(".work/log/traefik.log says (2026-12-02T16:47:19Z): command traefik error: listen tcp 127.0.0.1:%d: "
                                   "bind: address already in use" % taken)


def test_a_stale_pid_file_is_not_believed(layout):
    conf = traefik_ports_conf(layout, free_port(), free_port() + 1)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with open(traefik_health.pid_file(layout), "w") as handle:
            handle.write("%d\n" % sleeper.pid)  # alive, but not a traefik (a reused pid)
        health = traefik_health.check(layout, conf)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not health.running and health.pid is None
    assert "no Traefik process from" in health.problem


def test_our_traefik_listening_and_answering_its_ping_is_running(layout, fake_traefik):
    web = free_port()
    ping = ports.free_port_near("127.0.0.1", web, {web})
    proc = fake_traefik(web, ping)
    health = traefik_health.check(layout, traefik_ports_conf(layout, web, ping))
    assert health == traefik_health.Health(True, proc.pid, "")


def test_our_traefik_without_a_ping_is_not_called_running(layout, fake_traefik):
    web = free_port()
    ping = ports.free_port_near("127.0.0.1", web, {web})
    proc = fake_traefik(web, 0)
    health = traefik_health.check(layout, traefik_ports_conf(layout, web, ping))
    assert not health.running and health.pid == proc.pid
    assert "nothing answers its ping on 127.0.0.1:%d" % ping in health.problem


def test_status_reports_traefik_and_prints_curl_only_while_it_runs(layout, taken, fake_traefik):
    from forever_slurm.observe import status
    traefik_ports_conf(layout, taken, free_port())
    report = status.collect(layout)
    assert report["traefik"]["running"] is False and "port %d is taken" % taken in report["traefik"]["problem"]
    text = status.render(report)
    assert text.splitlines()[1].startswith("Traefik is not running: port %d is taken" % taken)
    assert "curl" not in text

    web = free_port()
    ping = ports.free_port_near("127.0.0.1", web, {web})
    with open(layout.env_file, "w") as handle:
        handle.write("FS_TRAEFIK_PORT=%d\nFS_TRAEFIK_PING_PORT=%d\nSERVICE_LIST=hello/1\n" % (web, ping))
    proc = fake_traefik(web, ping)
    text = status.render(status.collect(layout))
    assert "traefik: running (pid %d, port %d)" % (proc.pid, web) in text
    assert text.count("try: curl") == 1 and "try: curl http://127.0.0.1:%d/hello/" % web in text
    assert "<service>" not in text


# ---------------------------------------------------------------- the root

def test_config_yes_creates_a_missing_root_and_says_so(tmp_path):
    said = []
    layout = settings.Layout(str(tmp_path / "new root"))
    config_steps.ensure_root(layout, configure.Prompter(no_input, no_input), True, said.append)
    assert os.path.isdir(layout.root) and said == ["Created %s (it did not exist)." % layout.root]


def test_config_asks_before_creating_a_root_and_no_is_the_default(tmp_path):
    layout = settings.Layout(str(tmp_path / "typo"))
    script = Script()
    with pytest.raises(ForeverError) as caught:
        config_steps.ensure_root(layout, script.prompter(), False, lambda text="": None)
    assert "nothing was done" in str(caught.value)
    assert script.asked("%s does not exist. Create it" % layout.root)
    assert not os.path.exists(layout.root)


@pytest.mark.parametrize("argv", [["status"], ["run", "--once"], ["logs"], ["check"], ["config", "--yes"]])
def test_a_root_that_is_a_file_is_refused_plainly(tmp_path, capsys, argv):
    path = tmp_path / "a-file"
    path.write_text("x")
    assert cli.main(["--root", str(path)] + argv) == 1
    err = capsys.readouterr().err
    assert "is not a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["status"], ["run", "--once"], ["traefik"], ["uninstall"]])
def test_a_missing_root_is_refused_and_not_created(tmp_path, capsys, argv):
    root = tmp_path / "missing"
    assert cli.main(["--root", str(root)] + argv) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "config" in err
    assert not root.exists()


def test_status_of_a_directory_without_a_setup_says_so(tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "status"]) == 1
    assert "has no forever-slurm setup" in capsys.readouterr().err
    assert os.listdir(str(tmp_path)) == []     # status writes nothing


def test_every_subcommand_help_has_a_description():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        assert subparser.description and len(subparser.description) > 40, name


# ---------------------------------------------------------------- through the fakes of systemctl and loginctl

@pytest.fixture
def fake_session(tmp_path, monkeypatch):
    """os.environ with the fake systemctl/loginctl/crontab first on a long PATH, and a .pyz to run."""
    noise = os.pathsep.join(str(tmp_path / ("junk%d" % i)) for i in range(30))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join([FAKE_BIN, noise, os.environ["PATH"]]))
    monkeypatch.setenv("FAKE_STATE", str(tmp_path / "fake-state"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    pyz = tmp_path / "forever_slurm.pyz"
    pyz.write_text("")
    monkeypatch.setattr(settings, "running_pyz", lambda: str(pyz))
    return home


def test_install_says_the_linger_advice_once_and_writes_a_short_path(layout, fake_session):
    said = []
    config_steps.install_supervision(layout, ("forever-traefik", "forever-slurm"), said.append, inputs={})
    assert sum("enable-linger" in line for line in said) == 1
    unit = (fake_session / ".config" / "systemd" / "user" /
            (units.unit_name(layout, "forever-slurm") + ".service")).read_text()
    path = unit.split('"PATH=')[1].split('"')[0]
    assert "junk" not in path and "fake_bin" not in path
    assert path.split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_units_run_as_the_host_config_ran_as(tmp_path, fake_session, monkeypatch):
    """Two "login nodes" of one machine (FOREVER_HOST): each one's units carry its name, and both start here."""
    monkeypatch.setenv("FOREVER_HOST", "login2")
    layout = settings.Layout.for_host(str(tmp_path / "root"))
    config_steps.install_supervision(layout, ("forever-traefik", "forever-slurm"), lambda text="": None, inputs={})
    unit = (fake_session / ".config" / "systemd" / "user" /
            (units.unit_name(layout, "forever-slurm") + ".service")).read_text()
    assert '"FOREVER_HOST=login2"' in unit
    assert "\nConditionHost=%s\n" % socket.gethostname() in unit
    monkeypatch.delenv("FOREVER_HOST")
    assert units.unit_name(settings.Layout.for_host(layout.root), "forever-slurm") != units.unit_name(
        layout, "forever-slurm")


def test_a_loop_unit_that_failed_is_named_with_systemds_word(layout, fake_session, monkeypatch, taken):
    monkeypatch.setenv("FAKE_FAILED_UNITS", units.unit_name(layout, "forever-slurm"))
    conf = traefik_ports_conf(layout, taken, free_port())
    report = config_steps.install_supervision(layout, ("forever-traefik", "forever-slurm"), lambda text="": None, inputs={})
    clock = Clock(1000.0)
    problems = startup_check.wait_until_up(layout, conf, report, lambda text="": None, 5, clock=clock, sleep=clock.sleep)
    assert "the loop (forever-slurm) is not running (systemd says: failed)" in problems[1]


def test_each_unit_is_restarted_only_for_what_it_reads(layout):
    def inputs(env_text, static):
        with open(layout.env_file, "w") as handle:
            handle.write(env_text)
        with open(layout.traefik_static, "w") as handle:
            handle.write(static)
        return config_steps.unit_inputs(layout, settings.load(layout), "/opt/traefik")

    base = inputs('FS_SSH_LOGIN_NODE="login1"\nFS_SURGE=1\n', "web: 13013\n")
    two_nodes = inputs('FS_SSH_LOGIN_NODE="login1 login2"\nFS_SURGE=1\n', "web: 13013\n")
    assert two_nodes["forever-ssh-forward"] != base["forever-ssh-forward"]     # the tunnel's node list
    assert two_nodes["forever-traefik"] == base["forever-traefik"]
    assert two_nodes["forever-slurm"] == base["forever-slurm"]                 # the loop rereads .env itself
    new_port = inputs('FS_SSH_LOGIN_NODE="login1"\nFS_SURGE=1\nFS_TRAEFIK_PORT=14000\n', "web: 14000\n")
    assert new_port["forever-traefik"] != base["forever-traefik"]
    assert new_port["forever-ssh-forward"] != base["forever-ssh-forward"]      # it forwards to that port
    surge = inputs('FS_SSH_LOGIN_NODE="login1"\nFS_SURGE=3\n', "web: 13013\n")
    assert surge == base


def _programs(directory, names, says):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\necho %s\n" % says)
        path.chmod(0o755)


def test_units_run_the_squeue_the_shell_runs_not_the_one_beside_python(layout, fake_session, tmp_path,
                                                                       monkeypatch):
    """A login node: the distribution's python3 and Slurm clients in one directory, the site's Slurm
    (module load) first on PATH. Python's directory first on the units' PATH ran the distribution's
    squeue ("Could not establish a configuration source")."""
    distro, site = tmp_path / "distro" / "bin", tmp_path / "site" / "slurm" / "bin"
    _programs(distro, ("squeue", "sbatch", "scontrol", "scancel"), "distro")
    _programs(site, ("squeue", "sbatch", "scontrol", "scancel"), "site")
    os.symlink(sys.executable, str(distro / "python3"))
    monkeypatch.setenv("PATH", os.pathsep.join([str(site), os.environ["PATH"], str(distro)]))
    monkeypatch.setattr(sys, "executable", str(distro / "python3"))
    said = []
    config_steps.install_supervision(layout, ("forever-traefik", "forever-slurm"), said.append, inputs={})
    unit = (fake_session / ".config" / "systemd" / "user" /
            (units.unit_name(layout, "forever-slurm") + ".service")).read_text()
    path = unit.split('"PATH=')[1].split('"')[0]
    for tool in ("squeue", "sbatch", "scontrol", "scancel"):
        assert shutil.which(tool, path=path) == str(site / tool), path
    assert str(distro) in path.split(os.pathsep)      # python3's directory is still there, after the site's
    assert not [line for line in said if line.startswith("!")]


def test_config_says_when_the_units_would_run_another_program(tmp_path):
    distro, site = tmp_path / "distro", tmp_path / "site"
    _programs(distro, ("squeue",), "distro")
    _programs(site, ("squeue",), "site")
    shell_path = os.pathsep.join([str(site), str(distro)])
    assert units.path_differences(os.pathsep.join([str(site)]), shell_path) == []
    assert units.path_differences(str(distro), shell_path, ("squeue",)) == \
        [("squeue", str(site / "squeue"), str(distro / "squeue"))]
