"""Unit files and crontab lines: golden renderings, systemd-analyze verify, install/uninstall against fakes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from forever_slurm.systems import proc
from forever_slurm.setup import units
from forever_slurm.common.errors import ForeverError
from forever_slurm.common.settings import Layout

from fakes import golden_checker

HERE = os.path.dirname(os.path.abspath(__file__))
FAKES = os.path.join(HERE, "fake_bin")
GOLDEN_ROOT = "/srv/forever root"  # a space, to prove the quoting
GOLDEN_PATH = "/opt/slurm/bin:/usr/bin:/bin"


def golden_specs():
    layout = Layout(GOLDEN_ROOT)
    return layout, units.standard_specs(layout, "/usr/bin/python3", GOLDEN_ROOT + "/forever_slurm.pyz",
                                        which=units.UNIT_NAMES, path=GOLDEN_PATH)


check_golden = golden_checker("units")


@pytest.mark.parametrize("index", range(len(units.UNIT_NAMES)))
def test_unit_files_match_golden(index):
    _, specs = golden_specs()
    spec = specs[index]
    check_golden(spec.name + ".service", units.render_unit(spec))


def test_old_systemd_unit_appends_through_a_shell_golden():
    _, specs = golden_specs()
    text = units.render_unit(specs[1], systemd_version=239)
    assert "append:" not in text
    check_golden("forever-slurm.systemd239.service", text)


def test_cron_lines_match_golden():
    layout, specs = golden_specs()
    check_golden("crontab.txt", "\n".join(units.cron_lines(specs, layout)) + "\n")


def test_systemd_words_are_escaped():
    assert units.systemd_word("/usr/bin/python3") == "/usr/bin/python3"
    assert units.systemd_word("a b") == '"a b"'
    assert units.systemd_word('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert units.systemd_word("100%") == '"100%%"'
    assert units.systemd_word("$HOME") == '"$$HOME"'
    assert units.systemd_word(";") == "\\;"


def test_newline_in_a_path_is_refused():
    spec = units.UnitSpec("forever-slurm", "d", ["/usr/bin/python3", "x\ny"], "/tmp", "/tmp/log")
    with pytest.raises(ForeverError):
        units.render_unit(spec)
    with pytest.raises(ForeverError):
        units.cron_lines([spec], Layout("/tmp"))


def test_cron_owner_is_exact_about_root_and_name():
    layout = Layout("/a/b")
    other = Layout("/a/b c")
    line = units.cron_lines(units.standard_specs(layout, "/usr/bin/python3", "/a/b/f.pyz"), layout)[0]
    assert units.cron_owner(line, layout) == "forever-traefik"
    assert units.cron_owner(line, other) is None
    assert units.cron_owner("# forever-slurm:/a/b forever-traefik", layout) is None  # a bare comment is not a job
    assert units.cron_owner("0 * * * * backup.sh", layout) is None


def test_merge_crontab_keeps_other_lines_and_is_idempotent():
    layout = Layout("/r")
    specs = units.standard_specs(layout, "/usr/bin/python3", "/r/f.pyz")
    mine = units.cron_lines(specs, layout)
    user = "MAILTO=me\n0 3 * * * /home/me/backup.sh\n"
    once = units.merge_crontab(user, mine, layout, units.UNIT_NAMES)
    twice = units.merge_crontab(once, mine, layout, units.UNIT_NAMES)
    assert once == twice
    assert once.startswith(user)
    assert len(once.splitlines()) == 2 + 2 * len(specs)
    assert units.merge_crontab(once, [], layout, units.UNIT_NAMES) == user


# ---------------------------------------------------------------- systemd-analyze verify


def real_specs(tmp_path):
    layout = Layout(str(tmp_path / "my root"))
    layout.make_dirs()
    pyz = os.path.join(layout.root, "forever_slurm.pyz")
    open(pyz, "w").close()
    return units.standard_specs(layout, sys.executable, pyz, which=units.UNIT_NAMES, path=os.environ["PATH"],
                                machine=socket.gethostname())


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("version", [None, 239])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path, version):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    paths = []
    for spec in real_specs(tmp_path):
        path = unit_dir / (spec.name + ".service")
        path.write_text(units.render_unit(spec, version))
        paths.append(str(path))
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), SYSTEMD_LOG_LEVEL="warning")
    done = subprocess.run(["systemd-analyze", "verify", "--user"] + paths, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if "forever-" in line]
    assert ours == [], done.stderr


# ---------------------------------------------------------------- install / uninstall with fakes


class World:
    """A HOME, a root and fake systemctl/loginctl/crontab on PATH, all under tmp_path."""

    def __init__(self, tmp_path, **env):
        self.state = tmp_path / "fake-state"
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.layout = Layout(str(tmp_path / "root"))
        self.environ = {"PATH": FAKES + os.pathsep + "/usr/bin:/bin", "HOME": str(self.home), "USER": "alice",
                        "FAKE_STATE": str(self.state), "LANG": "C"}
        self.environ.update(env)
        self.said = []
        self.specs = units.standard_specs(self.layout, sys.executable, os.path.join(self.layout.root, "f.pyz"))
        self.run_user = tmp_path / "run-user"  # no /run/user/<uid> here: session_env adds nothing

    def install(self, inputs=None):
        return units.install_supervision(self.specs, self.layout, proc.run, self.environ, self.said.append,
                             uid=1000, run_user_dir=str(self.run_user), inputs=inputs)

    def uninstall(self, **kw):
        return units.uninstall(units.UNIT_NAMES, self.layout, proc.run, self.environ, self.said.append,
                               uid=1000, run_user_dir=str(self.run_user), **kw)

    def calls(self, tool=None):
        path = self.state / "calls.log"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [row[1:] for row in rows if tool is None or row[0] == tool]

    def unit(self, name):
        """This root's systemd unit `name` on this host (forever-slurm-<id>)."""
        return units.unit_name(self.layout, name)

    def unit_file(self, name):
        return self.home / ".config" / "systemd" / "user" / (name + ".service")

    def crontab(self):
        path = self.state / "crontab"
        return path.read_text() if path.exists() else None


def test_install_systemd_writes_units_enables_and_warns_about_linger(tmp_path):
    world = World(tmp_path)
    report = world.install()
    assert report.method == "systemd"
    for spec in world.specs:
        assert world.unit_file(spec.unit_name).read_text() == units.render_unit(spec, 252)
    calls = world.calls("systemctl")
    assert ["--user", "daemon-reload"] in calls
    assert ["--user", "enable", "--now", world.unit("forever-traefik"), world.unit("forever-slurm")] in calls
    assert not any(c[1] == "restart" for c in calls if len(c) > 1)
    assert world.calls("loginctl") == [["show-user", "alice", "-p", "Linger"]]
    assert any("loginctl enable-linger alice" in note for note in report.notes)
    assert world.calls("crontab") == [["-l"]]  # only looks for lines of an earlier cron install


def test_install_systemd_after_cron_removes_the_cron_lines(tmp_path):
    world = World(tmp_path, FAKE_SYSTEMD_DOWN="1", FAKE_LINGER="yes")
    world.state.mkdir()
    (world.state / "crontab").write_text("MAILTO=alice\n")
    assert world.install().method == "cron"
    world.environ["FAKE_SYSTEMD_DOWN"] = "0"
    assert world.install().method == "systemd"
    assert world.crontab() == "MAILTO=alice\n"
    assert world.unit_file(world.unit("forever-slurm")).exists()


def test_install_twice_changes_nothing_and_restarts_only_what_changed(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    world.install()
    before = {s.name: world.unit_file(s.unit_name).stat().st_mtime_ns for s in world.specs}
    second = world.install()
    assert second.written == [] and second.backups == [] and second.notes == []
    assert second.started == [] and second.restarted == []
    assert {s.name: world.unit_file(s.unit_name).stat().st_mtime_ns for s in world.specs} == before
    assert not any(c[1] == "restart" for c in world.calls("systemctl") if len(c) > 1)
    assert "systemd: %s, %s already running with these settings" % (
        world.unit("forever-traefik"), world.unit("forever-slurm")) in world.said
    leftovers = [p for p in os.listdir(str(world.unit_file("x").parent)) if not p.endswith(".service")]
    assert leftovers == []

    third = world.install(inputs={"forever-traefik": "entryPoints: web 127.0.0.1:14000"})
    traefik = world.unit("forever-traefik")
    assert third.restarted == [traefik]
    assert world.calls("systemctl")[-1] == ["--user", "restart", traefik]
    assert "systemd: restarted %s, as its settings changed" % traefik in world.said
    assert world.install(inputs={"forever-traefik": "entryPoints: web 127.0.0.1:14000"}).restarted == []


def test_a_unit_running_from_before_the_record_existed_is_restarted_once(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    world.install()
    os.remove(units.started_record(world.layout, "forever-slurm"))  # as after an upgrade from an older version
    assert world.install().restarted == [world.unit("forever-slurm")]
    assert world.install().restarted == []


def test_install_keeps_a_backup_of_a_different_unit_file(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    path = world.unit_file(world.unit("forever-slurm"))
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nExecStart=/bin/true  # my own edit\n")
    report = world.install()
    assert len(report.backups) == 1
    with open(report.backups[0]) as handle:
        assert "my own edit" in handle.read()
    assert "my own edit" not in path.read_text()


def test_session_env_fills_missing_runtime_and_bus(tmp_path):
    run_user = tmp_path / "run-user"
    (run_user / "1234").mkdir(parents=True)
    (run_user / "1234" / "bus").write_text("")
    env = units.session_env({"HOME": "/h"}, 1234, str(run_user))
    assert env["XDG_RUNTIME_DIR"] == str(run_user / "1234")
    assert env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=" + str(run_user / "1234" / "bus")
    kept = units.session_env({"XDG_RUNTIME_DIR": "/x", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/x/bus"}, 1234,
                             str(run_user))
    assert kept["XDG_RUNTIME_DIR"] == "/x" and kept["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/x/bus"
    assert "XDG_RUNTIME_DIR" not in units.session_env({}, 99, str(run_user))


def test_systemd_usable_reports_why_not(tmp_path):
    world = World(tmp_path, FAKE_SYSTEMD_DOWN="1")
    usable, why = units.systemd_usable(proc.run, world.environ)
    assert not usable and "No medium found" in why
    usable, why = units.systemd_usable(proc.run, dict(world.environ, PATH=str(tmp_path)))
    assert not usable and "systemctl" in why


def test_linger_advice(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    assert units.linger_advice(proc.run, "alice", world.environ) is None
    world.environ["FAKE_LINGER"] = "no"
    assert "loginctl enable-linger alice" in units.linger_advice(proc.run, "alice", world.environ)


def test_cron_fallback_is_idempotent_and_keeps_user_lines(tmp_path):
    world = World(tmp_path, FAKE_SYSTEMD_DOWN="1")
    world.state.mkdir()
    user_line = "0 3 * * * /home/alice/backup.sh\n"
    (world.state / "crontab").write_text(user_line)
    report = world.install()
    assert report.method == "cron"
    table = world.crontab()
    assert table.startswith(user_line)
    assert table.count("@reboot ") == 2 and table.count("* * * * * ") == 2
    assert "flock -n" in table and "cron-forever-slurm.lock" in table
    assert not world.unit_file(world.unit("forever-slurm")).exists()
    again = world.install()
    assert again.written == [] and world.crontab() == table
    assert world.calls("crontab").count(["-"]) == 1

    world.uninstall()
    assert world.crontab() == user_line
    with open(os.path.join(world.layout.work, "crontab.bak")) as handle:
        assert handle.read() == table


def _read_or_empty(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def test_cron_line_really_runs_under_sh_and_flock(tmp_path):
    """The rendered command, run by /bin/sh as cron would, appends to the log and never runs twice."""
    if not shutil.which("flock"):
        pytest.skip("flock(1) is not installed")
    layout = Layout(str(tmp_path / "a % root"))
    layout.make_dirs()
    script = tmp_path / "prog.py"
    script.write_text("import os, sys, time\nprint('started', os.getcwd(), os.environ['PYTHONUNBUFFERED'])\n"
                      "time.sleep(float(sys.argv[-1]))\n")
    spec = units.UnitSpec("forever-slurm", "d", [sys.executable, str(script), "3"], layout.root,
                          os.path.join(layout.log, "forever-slurm.log"), (("PYTHONUNBUFFERED", "1"),))
    line = units.cron_lines([spec], layout)[1]
    command = line[len("* * * * * "):].replace("\\%", "%")  # what cron hands to the shell
    lock = units.cron_lock(layout, "forever-slurm")
    first = subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline and len(units.lock_holders(lock)) < 2:
            time.sleep(0.05)
        assert len(units.lock_holders(lock)) == 2  # flock(1) and the program under it
        # The child holds the lock from its fork on, before Python has printed anything.
        while time.time() < deadline and "started" not in open(spec.log_path).read():
            time.sleep(0.05)
        second = subprocess.run(["/bin/sh", "-c", command], timeout=10)
        assert second.returncode == 1  # flock -n: already running, nothing started
        # Holding the lock is not having printed yet: on a busy machine Python starts slowly.
        while time.time() < deadline and "started" not in _read_or_empty(spec.log_path):
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    with open(spec.log_path) as handle:
        assert handle.read().count("started") == 1


def test_uninstall_systemd_removes_exactly_ours(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    world.install()
    mine = world.unit_file("x").parent / "my-own.service"
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    os.makedirs(world.layout.services, exist_ok=True)
    with open(world.layout.env_file, "w") as handle:
        handle.write("SERVICE_LIST=x/1\n")
    removed = world.uninstall()
    assert sorted(os.path.basename(p) for p in removed) == sorted(
        world.unit(n) + ".service" for n in ("forever-slurm", "forever-traefik"))
    assert mine.exists() and os.path.exists(world.layout.env_file) and os.path.isdir(world.layout.services)
    assert os.path.isdir(world.layout.log)
    calls = world.calls("systemctl")
    assert ["--user", "disable", "--now", world.unit("forever-traefik"), world.unit("forever-slurm")] in calls
    assert calls[-1] == ["--user", "daemon-reload"]
    assert world.uninstall() == []


def test_uninstall_cron_stops_the_running_program(tmp_path):
    if not shutil.which("flock"):
        pytest.skip("flock(1) is not installed")
    world = World(tmp_path, FAKE_SYSTEMD_DOWN="1")
    world.layout.make_dirs()
    lock = units.cron_lock(world.layout, "forever-slurm")
    holder = subprocess.Popen(["flock", "-n", lock, "sleep", "30"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline and len(units.lock_holders(lock)) < 2:
            time.sleep(0.05)
        assert holder.pid in units.lock_holders(lock)
        killed = []
        world.uninstall(kill=lambda pid, sig: killed.append(pid) or os.kill(pid, sig))
        assert holder.pid in killed
        assert holder.wait(timeout=10) != 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


def test_no_systemd_and_no_crontab_says_what_to_do(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    os.symlink(os.path.join(FAKES, "systemctl"), str(bare / "systemctl"))
    os.symlink(sys.executable, str(bare / "python3"))  # the fake's `env python3`
    world = World(tmp_path, FAKE_SYSTEMD_DOWN="1", PATH=str(bare) + os.pathsep + "/nonexistent")
    with pytest.raises(ForeverError) as info:
        world.install()
    assert "nohup" in str(info.value) and "crontab" in str(info.value)


SLEEPER = """import os, sys, time
print('up', os.getpid(), open(sys.argv[1]).read().strip(), flush=True)
if open(sys.argv[1]).read().strip() == 'crash':
    print('listen tcp 127.0.0.1:13013: bind: address already in use', flush=True)
    sys.exit(3)
time.sleep(60)
"""


def sleeper_world(tmp_path):
    """A cron World whose unit is a real program: it reads its setting at start, as Traefik does."""
    world = World(tmp_path, FAKE_SYSTEMD_DOWN="1")
    world.layout.make_dirs()
    script = tmp_path / "prog.py"
    script.write_text(SLEEPER)
    setting = tmp_path / "setting"
    setting.write_text("port 13013")
    world.specs = [units.UnitSpec("forever-traefik", "d", [sys.executable, str(script), str(setting)],
                                  world.layout.root, os.path.join(world.layout.log, "forever-traefik.log"),
                                  (("PATH", "/usr/bin:/bin"),))]
    return world, setting


def running_pid(world):
    lock = units.cron_lock(world.layout, "forever-traefik")
    deadline = time.time() + 10
    while time.time() < deadline:
        holders = units.lock_holders(lock)
        if len(holders) == 2:
            return max(holders)  # the program is flock's child, so it has the later pid
        time.sleep(0.05)
    raise AssertionError("the program did not start")


@pytest.mark.skipif(not shutil.which("flock"), reason="flock(1) is not installed")
def test_cron_starts_now_and_restarts_a_running_program_when_its_settings_change(tmp_path):
    world, setting = sleeper_world(tmp_path)
    try:
        first = world.install(inputs={"forever-traefik": setting.read_text()})
        assert first.method == "cron" and first.started == ["forever-traefik"]
        pid = running_pid(world)
        assert world.install(inputs={"forever-traefik": setting.read_text()}).restarted == []
        assert running_pid(world) == pid
        assert "cron: forever-traefik already running with these settings" in world.said

        setting.write_text("port 14000")
        again = world.install(inputs={"forever-traefik": setting.read_text()})
        assert again.restarted == ["forever-traefik"]
        assert "cron: restarted forever-traefik, as its settings changed" in world.said
        new_pid = running_pid(world)
        assert new_pid != pid
        with pytest.raises(OSError):
            os.kill(pid, 0)
        deadline = time.time() + 10
        while time.time() < deadline and "port 14000" not in open(world.specs[0].log_path).read():
            time.sleep(0.05)
        assert "up %d port 14000" % new_pid in open(world.specs[0].log_path).read()
    finally:
        world.uninstall()
    assert units.lock_holders(units.cron_lock(world.layout, "forever-traefik")) == []


@pytest.mark.skipif(not shutil.which("flock"), reason="flock(1) is not installed")
def test_cron_says_why_a_program_stopped_at_once(tmp_path):
    world, setting = sleeper_world(tmp_path)
    setting.write_text("crash")
    try:
        world.install(inputs={"forever-traefik": "crash"})
    finally:
        world.uninstall()
    said = "\n".join(world.said)
    assert "forever-traefik stopped at once (exit 3)" in said
    assert "bind: address already in use" in said


def test_minimal_path_holds_only_the_tools_dirs_whatever_the_callers_order(tmp_path):
    for tool, where in (("sbatch", "slurm/bin"), ("squeue", "slurm/bin"), ("ssh", "ssh/bin"),
                        ("traefik", "tr/bin")):
        directory = tmp_path / where
        directory.mkdir(parents=True, exist_ok=True)
        (directory / tool).write_text("#!/bin/sh\n")
        (directory / tool).chmod(0o755)
    noise = [str(tmp_path / ("noise%d" % i)) for i in range(40)]
    dirs = [str(tmp_path / d) for d in ("ssh/bin", "tr/bin", "slurm/bin")]
    one = units.minimal_path("/opt/py/bin/python3", os.pathsep.join(noise + dirs))
    other = units.minimal_path("/opt/py/bin/python3", os.pathsep.join(list(reversed(dirs)) + noise))
    assert one == other
    parts = one.split(os.pathsep)
    assert parts[:4] == ["/opt/py/bin", str(tmp_path / "slurm/bin"), str(tmp_path / "tr/bin"),
                         str(tmp_path / "ssh/bin")]
    assert parts[-2:] == ["/usr/bin", "/bin"]
    assert not any("noise" in p for p in parts)
    assert len(parts) == len(set(parts)) == 4 + len(units.BASE_PATH)  # flock lives in /usr/bin here


# ---------------------------------------------------------------- units per root and per host


def test_units_are_named_per_root_and_per_host(tmp_path):
    one = Layout(str(tmp_path / "a"), "login1")
    assert units.unit_name(one, "forever-slurm") == "forever-slurm-" + one.unit_id
    assert len(one.unit_id) == 10 and units.unit_name(one, "forever-slurm") == units.unit_name(
        Layout(str(tmp_path / "a") + "/", "login1"), "forever-slurm")       # however the root is spelled
    os.symlink(str(tmp_path / "a"), str(tmp_path / "link"))
    assert Layout(str(tmp_path / "link"), "login1").unit_id == one.unit_id
    assert Layout(str(tmp_path / "b"), "login1").unit_id != one.unit_id
    assert Layout(str(tmp_path / "a"), "login2").unit_id != one.unit_id


def test_a_unit_starts_only_on_the_machine_that_installed_it():
    layout = Layout(GOLDEN_ROOT)
    spec = units.standard_specs(layout, "/usr/bin/python3", GOLDEN_ROOT + "/f.pyz", machine="login1.cluster")[1]
    text = units.render_unit(spec)
    assert "\nConditionHost=login1.cluster\n" in text.split("[Service]")[0]
    assert text.replace("ConditionHost=login1.cluster\n", "") == units.render_unit(spec._replace(machine=""))


def other_root_world(world, tmp_path, name="other root"):
    """A second World: another root of the same user (same HOME, same fake systemd and crontab)."""
    other = World.__new__(World)
    other.__dict__.update(world.__dict__)
    other.layout = Layout(str(tmp_path / name))
    other.said = []
    other.specs = units.standard_specs(other.layout, sys.executable, os.path.join(other.layout.root, "f.pyz"))
    return other


def test_two_roots_install_side_by_side_and_uninstall_only_their_own(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    world.install()
    mine = {s.unit_name: world.unit_file(s.unit_name).read_text() for s in world.specs}
    other = other_root_world(world, tmp_path)
    report = other.install()
    assert report.started == [s.unit_name for s in other.specs] and report.restarted == []
    assert {s.unit_name: world.unit_file(s.unit_name).read_text() for s in world.specs} == mine
    assert not set(mine) & {s.unit_name for s in other.specs}
    other.uninstall()
    assert all(world.unit_file(name).exists() for name in mine)
    active = set(os.listdir(str(world.state / "active")))
    assert active == set(mine)                          # the first root's units still run


def legacy_unit(world, root, name="forever-slurm", edited=False):
    """A unit file as an earlier version wrote it: one per user, named without an id."""
    layout = Layout(root)
    spec = units.standard_specs(layout, sys.executable, os.path.join(root, "f.pyz"), which=(name,))[0]
    text = units.render_unit(spec._replace(unit=""), 252)
    if edited:
        text = text.replace(units.HEADER, "# my edit")
    path = world.unit_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    (world.state / "active").mkdir(parents=True, exist_ok=True)
    (world.state / "active" / name).write_text("")
    return path


def test_an_earlier_versions_units_of_this_root_are_replaced(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    old = [legacy_unit(world, world.layout.root, name) for name in ("forever-traefik", "forever-slurm")]
    report = world.install()
    assert not any(path.exists() for path in old)
    calls = world.calls("systemctl")
    stop = calls.index(["--user", "stop", "forever-traefik", "forever-slurm"])
    assert calls.index(["--user", "enable", "--now"] + [s.unit_name for s in world.specs]) > stop
    assert report.started == [s.unit_name for s in world.specs]
    assert set(os.listdir(str(world.state / "active"))) == {s.unit_name for s in world.specs}
    assert any("of an earlier version, which ran this root, are replaced" in line for line in world.said)
    assert world.install().started == []                # once


def test_an_earlier_versions_units_of_another_root_are_left_alone(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    theirs = legacy_unit(world, str(tmp_path / "production root"))
    text = theirs.read_text()
    world.install()
    world.uninstall()
    assert theirs.read_text() == text
    assert "forever-slurm" in os.listdir(str(world.state / "active"))
    assert not any("forever-slurm" in call for call in world.calls("systemctl") if call[1:2] in (["stop"], ["disable"]))


def test_uninstall_removes_this_roots_earlier_units_and_keeps_an_edited_ones_text(tmp_path):
    world = World(tmp_path, FAKE_LINGER="yes")
    edited = legacy_unit(world, world.layout.root, edited=True)
    world.install()
    backups = [p for p in os.listdir(str(edited.parent)) if p.startswith("forever-slurm.service.bak-")]
    assert len(backups) == 1 and not edited.exists()
    legacy_unit(world, world.layout.root, "forever-traefik")
    removed = world.uninstall()
    assert str(world.unit_file("forever-traefik")) in removed
    assert not [p for p in os.listdir(str(edited.parent)) if p.endswith(".service")]


@pytest.mark.parametrize("root", ["/srv/forever root", "/srv/100% root", "/srv/$HOME/x", '/srv/a "b"'])
def test_runs_root_reads_what_render_unit_wrote(root):
    spec = units.standard_specs(Layout(root), "/usr/bin/python3", "/x/f.pyz")[1]
    for version in (None, 239):
        text = units.render_unit(spec, version)
        assert units.runs_root(text, root)
        assert not units.runs_root(text, root + "2") and not units.runs_root(text, "/srv")


def test_cron_lines_of_a_second_host_are_its_own(tmp_path):
    """Two hosts of one root on one machine (FOREVER_HOST) share its crontab: neither replaces the other's lines;
    the first host's lines are exactly those of earlier versions."""
    root = str(tmp_path / "root")
    first = Layout.for_host(root, "login1").with_first_host()
    second = Layout.for_host(root, "login2")
    lines = {}
    for layout in (first, second):
        lines[layout.host] = units.cron_lines(units.standard_specs(layout, "/usr/bin/python3", root + "/f.pyz"), layout)
    assert lines["login1"] == units.cron_lines(units.standard_specs(Layout(root), "/usr/bin/python3", root + "/f.pyz"),
                                               Layout(root))
    assert all(line.endswith(" @login2") for line in lines["login2"])
    assert all(os.path.join(root, ".work", "hosts", "login2", "cron-") in line for line in lines["login2"])
    table = units.merge_crontab("", lines["login1"], first, units.UNIT_NAMES)
    table = units.merge_crontab(table, lines["login2"], second, units.UNIT_NAMES)
    assert table.splitlines() == lines["login1"] + lines["login2"]
    assert units.merge_crontab(table, [], second, units.UNIT_NAMES).splitlines() == lines["login1"]
    assert units.merge_crontab(table, [], first, units.UNIT_NAMES).splitlines() == lines["login2"]
