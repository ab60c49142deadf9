"""Several login nodes on one root: which host this is, where each host's own files live (the first host
keeps today's paths), .env.<host> over .env, and `config --host-only`."""

import argparse
import io
import os
import stat
import threading
from contextlib import redirect_stderr, redirect_stdout

import pytest

from forever_slurm import cli
from forever_slurm.common import fsutil, hostname, settings
from forever_slurm.common.errors import ConfigError
from forever_slurm.observe import checks
from forever_slurm.setup import config_steps, configure

from fakes import Script


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return str(path)


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def run_cli(*argv, **env):
    out, err = io.StringIO(), io.StringIO()
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(list(argv))
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- which host am I

def test_forever_host_names_the_host_else_the_short_host_name(monkeypatch):
    assert hostname.this_host({"FOREVER_HOST": "login2"}) == "login2"
    monkeypatch.setattr(hostname.socket, "gethostname", lambda: "login3.cluster.example.org")
    assert hostname.this_host({}) == "login3"
    assert hostname.this_host({"FOREVER_HOST": ""}) == "login3"


@pytest.mark.parametrize("bad", ["..", "a/b", "../login1", "a b", "login1.cluster", "-x", "x-", "\udcff",
                                 "login\n1", "a" * 64])
def test_a_host_name_that_could_leave_its_folder_is_refused(bad, monkeypatch):
    with pytest.raises(ConfigError) as caught:
        hostname.this_host({"FOREVER_HOST": bad})
    assert "FOREVER_HOST" in str(caught.value)
    if "." not in bad[1:]:      # the short name of login1.cluster is login1
        monkeypatch.setattr(hostname.socket, "gethostname", lambda: bad)
        with pytest.raises(ConfigError, match="set FOREVER_HOST"):
            hostname.this_host({})


def test_a_bad_forever_host_stops_a_command_with_one_line(root):
    code, _, err = run_cli("--root", root, "check", FOREVER_HOST="../etc")
    assert code == 1 and "FOREVER_HOST" in err and "Traceback" not in err


# ---------------------------------------------------------------- per-host files

PER_HOST = ("watch", "staging_tmp", "log", "lock_file", "traefik_static", "traefik_pid", "traefik_version",
            "disk_reserve", "wake_spool")


def test_a_layout_of_just_a_root_keeps_every_path_of_earlier_versions(root):
    layout = settings.Layout(root)
    work = os.path.join(root, ".work")
    assert layout.host_work == work and layout.is_first_host
    assert layout.lock_file == os.path.join(work, "forever-slurm.lock")
    assert layout.watch == os.path.join(work, "traefik-watch")
    assert layout.log == os.path.join(work, "log")
    assert layout.traefik_static == os.path.join(work, "traefik-static.yml")
    assert layout.traefik_pid == os.path.join(work, "traefik.pid")
    assert layout.state_file == os.path.join(work, "state.json")
    assert layout.lease_dir == os.path.join(work, "leader")
    assert layout.hosts_dir == os.path.join(work, "hosts")
    assert layout.host_file == os.path.join(work, "hosts", layout.host, "host.json")


def test_the_first_host_keeps_work_and_the_others_get_their_own_folder(root):
    first = settings.Layout.for_host(root, "login1").with_first_host()
    second = settings.Layout.for_host(root, "login2").with_first_host()
    assert first.first_host == second.first_host == "login1"
    assert first.host_work == first.work
    assert second.host_work == os.path.join(root, ".work", "hosts", "login2")
    for name in PER_HOST:
        assert getattr(second, name) == os.path.join(second.host_work, os.path.basename(getattr(first, name))), name
    for name in ("state_file", "slurm_output", "bin", "services", "env_file", "lease_dir", "hosts_dir"):
        assert getattr(first, name) == getattr(second, name), name
    assert second.host_file == os.path.join(root, ".work", "hosts", "login2", "host.json")
    assert first.host_file == os.path.join(root, ".work", "hosts", "login1", "host.json")
    assert first.unit_id != second.unit_id
    # A reader sees the same, without writing anything.
    assert settings.Layout.for_host(root, "login2") == second


def test_the_first_host_is_recorded_once_private_and_whole(root):
    layout = settings.Layout.for_host(root, "login1").with_first_host()
    path = layout.first_host_file
    assert open(path).read() == "login1\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(layout.work).st_mode) == 0o700
    assert settings.Layout.for_host(root, "login2").with_first_host().first_host == "login1"
    assert open(path).read() == "login1\n"
    assert sorted(os.listdir(layout.work)) == ["first-host"]     # no temp file left behind


def test_hosts_starting_at_once_agree_on_one_first_host(root):
    found, barrier = [], threading.Barrier(8)

    def start(host):
        barrier.wait()
        found.append(settings.Layout.for_host(root, host).with_first_host().first_host)
    threads = [threading.Thread(target=start, args=("login%d" % i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found) == 8


def test_an_existing_root_belongs_to_the_host_that_first_runs_this_version(root):
    """A root from before: its files in .work/ stay the files of whoever comes first, unmoved."""
    work = os.path.join(root, ".work")
    os.makedirs(os.path.join(work, "log"))
    write(os.path.join(work, "forever-slurm.lock"), "123\n")
    layout = settings.Layout.for_host(root, "login7")
    assert layout.is_first_host and layout.lock_file == os.path.join(work, "forever-slurm.lock")
    assert layout.with_first_host().lock_file == os.path.join(work, "forever-slurm.lock")


def test_create_once_is_exclusive(tmp_path):
    path = str(tmp_path / "x")
    assert fsutil.create_once(path, "a") is True
    assert fsutil.create_once(path, "b") is False
    assert open(path).read() == "a" and os.listdir(str(tmp_path)) == ["x"]


@pytest.mark.parametrize("text", ["../x\n", "login 1\n", "a/b"])
def test_a_broken_first_host_file_is_named(root, text):
    os.makedirs(os.path.join(root, ".work"))
    write(os.path.join(root, ".work", "first-host"), text)
    with pytest.raises(ConfigError) as caught:
        settings.Layout.for_host(root, "login1")
    assert caught.value.path == os.path.join(root, ".work", "first-host")


def test_make_dirs_of_a_second_host_are_private(root):
    settings.Layout.for_host(root, "login1").with_first_host()
    layout = settings.Layout.for_host(root, "login2")
    layout.make_dirs()
    for path in (layout.hosts_dir, layout.host_work, layout.watch, layout.log, layout.staging_tmp):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    assert not os.path.exists(os.path.join(layout.work, "traefik-watch"))


@pytest.mark.parametrize("name", ["hosts", "leader", "first-host", "wake-spool"])
def test_the_new_names_in_work_are_never_staged_over(name):
    assert settings.Layout.is_own_work_name(name)


def test_traefik_of_a_second_host_uses_its_own_folder(root):
    write(os.path.join(root, ".env"), "FS_TRAEFIK_PORT=14013\n")
    code, out, err = run_cli("--root", root, "traefik", "--print-config", FOREVER_HOST="login1")
    assert code == 0, err
    assert os.path.join(root, ".work", "traefik-watch") in out
    write(os.path.join(root, ".env.login2"), "FS_TRAEFIK_PORT=15013\n")
    code, out, err = run_cli("--root", root, "traefik", "--print-config", FOREVER_HOST="login2")
    assert code == 0, err
    assert os.path.join(root, ".work", "hosts", "login2", "traefik-watch") in out
    assert os.path.join(root, ".work", "hosts", "login2", "log", "traefik.log") in out
    assert ":15013" in out and ":14013" not in out
    assert open(os.path.join(root, ".work", "first-host")).read() == "login1\n"


# ---------------------------------------------------------------- .env.<host>

def test_env_of_a_host_overrides_env_key_by_key_on_that_host_only(root):
    write(os.path.join(root, ".env"), 'FS_TRAEFIK_PORT=14013\nFS_SURGE=2\nSERVICE_LIST="hello-python/2"\n')
    # ${NAME} reads the keys above, .env's included, as in .env.
    write(os.path.join(root, ".env.login2"), "FS_TRAEFIK_PORT=15013\nFS_TRAEFIK_PING_PORT=1${FS_SURGE}999\n")
    one = settings.load(settings.Layout.for_host(root, "login1"))
    two = settings.load(settings.Layout.for_host(root, "login2"))
    assert (one.traefik_port, one.traefik_ping_port) == (14013, 13014)
    assert (two.traefik_port, two.traefik_ping_port) == (15013, 12999)
    assert two.surge == one.surge == 2 and two.service_list == one.service_list


def test_a_bad_line_of_a_host_file_is_named_with_its_file_and_line(root):
    write(os.path.join(root, ".env"), "FS_SURGE=1\n")
    path = os.path.join(root, ".env.login2")
    write(path, "# mine\nFS_TRAEFIK_PORT=80\nFS_SLEEP_INTERVALL=5\nSERVICE_LIST=x/1\n")
    layout = settings.Layout.for_host(root, "login2")
    conf, problems = settings.check(layout)
    assert conf is None
    texts = [str(p) for p in problems]
    assert "%s:2: FS_TRAEFIK_PORT" % path in texts[0]
    assert any(t.startswith("%s:4: SERVICE_LIST is the same on every login node" % path) for t in texts)
    report = checks.check_root(layout, check_squeue=lambda: None)
    assert any(line.startswith("%s:2:" % path) for line in report.problems)
    assert any(line.startswith("%s:3: FS_SLEEP_INTERVALL is not a forever-slurm setting" % path)
               for line in report.problems)
    assert settings.check(settings.Layout.for_host(root, "login1"))[1] == []


def test_status_reads_the_host_file_too(root):
    write(os.path.join(root, ".env"), "FS_SURGE=1\n")
    write(os.path.join(root, ".env.login2"), "FS_TRAEFIK_PORT=nope\n")
    code, out, _ = run_cli("--root", root, "status", FOREVER_HOST="login2")
    assert "settings: BROKEN: %s:1: FS_TRAEFIK_PORT" % os.path.join(root, ".env.login2") in out
    code, out, _ = run_cli("--root", root, "status", FOREVER_HOST="login1")
    assert "BROKEN" not in out


def _args(*sets, service=()):
    return argparse.Namespace(set=list(sets), service=list(service), yes=True, host_only=True)


def test_config_host_only_writes_the_host_file_and_leaves_env_alone(root):
    write(os.path.join(root, ".env"), "FS_TRAEFIK_PORT=14013\nFS_SURGE=1\n")
    before = open(os.path.join(root, ".env")).read()
    layout = settings.Layout.for_host(root, "login2").with_first_host()
    said = []
    result = config_steps.write_host_settings(_args("FS_TRAEFIK_PORT=15013"),
                                              layout, Script().prompter(), said.append)
    path = os.path.join(root, ".env.login2")
    assert result.env_changed and open(os.path.join(root, ".env")).read() == before
    assert "FS_TRAEFIK_PORT=15013" in open(path).read()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert any(line.startswith("Wrote %s" % path) and "FS_TRAEFIK_PORT" in line for line in said)
    assert settings.load(layout).traefik_port == 15013
    assert settings.load(settings.Layout.for_host(root, "login1")).traefik_port == 14013
    again = config_steps.write_host_settings(_args("FS_TRAEFIK_PORT=15013"), layout, Script().prompter(), said.append)
    assert not again.env_changed and said[-1] == "%s is unchanged." % path


def test_config_host_only_refuses_what_is_not_one_hosts(root):
    layout = settings.Layout.for_host(root, "login2")
    with pytest.raises(ConfigError, match="pass --set KEY=VALUE"):
        config_steps.write_host_settings(_args(), layout, Script().prompter(), print)
    with pytest.raises(ConfigError, match="same on every login node"):
        config_steps.write_host_settings(_args("FS_SURGE=1", service=["x=1"]), layout, Script().prompter(), print)
    with pytest.raises(ConfigError, match="--set FS_TRAEFIK_PORT=80"):
        config_steps.write_host_settings(_args("FS_TRAEFIK_PORT=80"), layout, Script().prompter(), print)
    assert not os.path.exists(layout.host_env_file)


def test_plain_config_does_not_copy_a_hosts_values_into_env(root):
    write(os.path.join(root, ".env"), "FS_TRAEFIK_PORT=14013\n")
    write(os.path.join(root, ".env.login2"), "FS_TRAEFIK_PORT=15013\n")
    layout = settings.Layout.for_host(root, "login2")
    answers = configure.collect_answers(layout, Script().prompter(), overrides=["FS_SURGE=2"], assume_yes=True)
    assert answers["FS_TRAEFIK_PORT"] == "14013"
    configure.write_env(layout, answers)
    assert "FS_TRAEFIK_PORT=14013" in open(layout.env_file).read()
    assert settings.load(layout).traefik_port == 15013
