"""Issue 21 at the edges, against the shim Slurm and real processes: what a site's wrappers print, old
Slurm, a slow backend, a root path that is not UTF-8, a deleted lock file, closed stdio, a full disk."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from forever_slurm import cli
from forever_slurm.common import settings
from forever_slurm.common.errors import LockedError
from forever_slurm.core import lock, probe, run

from fakes import add_other_service, make_controller, routed

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(TOP, "src")
SHIMS = os.path.join(TOP, "tests", "shims")


def wrap(tmp_path, monkeypatch, name, script):
    """A site's wrapper around a shim command, first on PATH."""
    folder = tmp_path / "site-bin"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script.replace("REAL", os.path.join(SHIMS, name)) + "\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder) + os.pathsep + os.environ["PATH"])


def watch_text(layout, service):
    path = os.path.join(layout.watch, service + ".yml")
    return open(path).read() if os.path.exists(path) else ""


# -- 5, 6, 7, 8: what wrappers and old Slurm print ----------------------------------------------------
def test_a_banner_and_a_footer_around_squeue_change_nothing(root, shim_slurm, tmp_path, monkeypatch, caplog):
    wrap(tmp_path, monkeypatch, "squeue", 'echo "*** cluster maintenance Sunday ***"; REAL "$@"; printf "%s" "-- end --"')
    ctl, clock, prober, layout = make_controller(root, shim_slurm, 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n')
    assert ctl.look() is True                          # an empty queue with a banner is an empty queue
    assert len([c for c in shim_slurm.calls if c[0] == "sbatch"]) == 2
    shim_slurm.publish_all()
    clock.sleep(10)
    assert ctl.look() is True
    text = watch_text(layout, "hello-python")
    urls = sorted(m.url for m in ctl.snapshot.memory.jobs.values())
    assert len(urls) == 2 and all(url in text for url in urls) and "end" not in "".join(urls)
    assert caplog.text.count("not a row (set aside; said once)") == 1


def test_a_duplicated_listing_counts_each_job_once(root, shim_slurm, tmp_path, monkeypatch):
    ctl, clock, prober, layout = make_controller(root, shim_slurm, 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n')
    routed(ctl, clock, shim_slurm)
    wrap(tmp_path, monkeypatch, "squeue", 'REAL "$@"; REAL "$@"')     # a wrapper asking twice
    for _ in range(3):
        clock.sleep(60)
        assert ctl.look() is True
    assert len(shim_slurm.jobs) == 2                    # nothing more submitted
    assert len(ctl.snapshot.jobs) == 2 and text_has_servers(watch_text(layout, "hello-python"), 2)


def text_has_servers(text, count):
    return text.count("- url:") == count


def test_old_slurm_without_me_is_asked_by_uid_and_runs(root, shim_state, shim_slurm, caplog):
    (shim_state / "squeue-no-me").write_text("")
    ctl, clock, prober, layout = make_controller(root, shim_slurm, 'SERVICE_LIST="hello-python/1"\n')
    assert ctl.look() is True and ctl.look() is True
    squeues = [c for c in shim_slurm.calls if c[0] == "squeue"]
    assert "--me" in squeues[0] and all(c[1:3] == ["-u", str(os.getuid())] for c in squeues[1:])
    assert len(squeues) == 3 and len(shim_slurm.jobs) == 1
    assert caplog.text.count("squeue has no --me here") == 1 and "unrecognized option '--me'" in caplog.text


def test_check_reports_old_slurm(root, shim_state, capsys):
    (shim_state / "squeue-no-me").write_text("")
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')
    assert cli.main(["--root", str(root), "check"]) == 0
    out = capsys.readouterr().out
    assert "ok: squeue here has no --me (Slurm older than 20.11: squeue: unrecognized option '--me')" in out
    (shim_state / "fail-squeue").write_text("slurm_load_jobs error: Unable to contact slurm controller\n")
    assert cli.main(["--root", str(root), "check"]) == 1
    assert "squeue: squeue exited 1: slurm_load_jobs error: Unable to contact" in capsys.readouterr().out


def test_sbatch_that_prints_a_notice_before_the_id_is_a_submission(root, shim_slurm, tmp_path, monkeypatch):
    wrap(tmp_path, monkeypatch, "sbatch", 'echo "Accounting: charged to project p123 (80% used)"; REAL "$@"; '
                                          'echo "Remaining budget: 1500 core hours"')
    ctl, clock, prober, layout = make_controller(root, shim_slurm, 'SERVICE_LIST="hello-python/1"\n')
    assert ctl.look() is True
    submitted = [j["id"] for j in shim_slurm.jobs]
    assert len(submitted) == 1
    memory = ctl.snapshot.memory
    assert list(memory.jobs) == [str(submitted[0])]
    service = memory.services.get("hello-python")
    assert service is None or (not service.failures and not service.last_error)


# -- 1: a slow backend at the loop --------------------------------------------------------------------
def test_a_trickling_backend_neither_stalls_the_loop_nor_keeps_a_dead_one_routed(root, shim_slurm):
    import socketserver

    class Trickle(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                self.request.recv(4096)
                self.request.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(60):
                    time.sleep(0.5)
                    self.request.sendall(b"x")
            except OSError:
                pass
    slow = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Trickle)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    add_other_service(root)
    ctl, clock, prober, layout = make_controller(root, shim_slurm, 'SERVICE_LIST="hello-python/1 other/1"\n'
                                                 'FS_SPREAD=no\n'
                                            'FS_PROBE_TIMEOUT=0.5\n')
    routed(ctl, clock, shim_slurm)
    ids = {j["name"]: j["id"] for j in shim_slurm.jobs}
    other_url = ctl.snapshot.memory.jobs[ids["other"]].url
    assert other_url in watch_text(layout, "other")     # routed by the fake prober
    ctl.probe_all = probe.probe_all                     # from now on the real one
    shim_slurm.set_comment(ids["hello-python"], "traefik,hello-python,http://127.0.0.1:%d" % slow.server_address[1])
    clock.sleep(10)
    try:
        started = time.monotonic()
        ctl.look()                                     # other's backend (node URL, nothing listens) is gone
        ctl.probe_pass()
        took = time.monotonic() - started
    finally:
        slow.shutdown()
        slow.server_close()
    assert took < 2 * probe.PASS_TIMEOUTS * 0.5 + 1
    assert other_url not in watch_text(layout, "other")
    hello = ctl.snapshot.memory.jobs[ids["hello-python"]]
    assert hello.ready_since is None and "no complete answer within 0.5s" in hello.probe_detail


# -- 10: a root path that is not UTF-8, on Python 3.6 without a UTF-8 locale ----------------------------
PYENV = os.path.expanduser("~/.pyenv/versions")


def python36():
    found = sorted(p for p in (os.path.join(PYENV, v, "bin", "python3") for v in os.listdir(PYENV)
                               if v.startswith("3.6.")) if os.path.exists(p)) if os.path.isdir(PYENV) else []
    return found[0] if found else None


@pytest.mark.parametrize("name", [b"j\xc3\xb6rg", b"j\xf6rg"])
@pytest.mark.parametrize("python", ["3.6", "current"])
def test_a_root_path_that_is_not_ascii_keeps_its_jobs_under_any_locale(tmp_path, shim_slurm, name, python):
    """Two `run --once` under LC_ALL=C: the first job is recognised as ours (not foreign, not submitted
    again) and every log line with the path is written."""
    interpreter = python36() if python == "3.6" else sys.executable
    assert interpreter, "install Python 3.6 under ~/.pyenv (make provision)"
    root = os.path.join(os.fsencode(str(tmp_path)), name)
    os.mkdir(root)
    with open(os.path.join(root, b".env"), "w") as handle:
        handle.write('SERVICE_LIST="hello-python/1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHON"))}
    env.update(LC_ALL="C", PYTHONPATH=SRC)
    argv = [os.fsencode(interpreter), b"-m", b"forever_slurm", b"--root", root, b"run", b"--once"]
    for _ in range(2):
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert b"Traceback" not in done.stderr and b"Logging error" not in done.stderr, done.stderr
    jobs = shim_slurm.jobs
    assert len(jobs) == 1 and os.fsencode(jobs[0]["chdir"]) == root + b"/.work/slurm-output"
    assert os.fsencode(jobs[0]["env_root"]) == root          # FOREVER_ROOT in the job's environment
    log_text = open(os.path.join(root, b".work", b"log", b"loop.log"), "rb").read()
    assert b"submitted job %d" % int(jobs[0]["id"]) in log_text
    assert b"not submitted by this root" not in log_text and b"foreign" not in log_text
    state_jobs = json.load(open(os.path.join(root, b".work", b"state.json")))
    assert str(jobs[0]["id"]) in json.dumps(state_jobs)


def test_log_lines_with_undecodable_bytes_are_written_readably(tmp_path, monkeypatch):
    import logging
    from forever_slurm.common import logfiles
    layout = settings.Layout(str(tmp_path))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logfiles.to_console(False)
        logfiles.to_file(layout, "loop.log")
        path = "/tmp/" + b"j\xc3\xb6rg/x\xf6".decode("ascii", "surrogateescape")
        logging.getLogger("forever_slurm").warning("root at %s and a lone \ud800", path)
        for handler in root.handlers:
            handler.flush()
        written = open(os.path.join(layout.log, "loop.log"), encoding="utf-8").read()
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    assert "root at /tmp/jörg/x\\xf6 and a lone \\ud800" in written


# -- 12: a deleted lock file ---------------------------------------------------------------------------
HOLD = ("import sys; sys.path.insert(0, %r)\n"
        "from forever_slurm.core import lock\n"
        "held = lock.RootLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n" % SRC)


def hold_elsewhere(path):
    """Another process (fcntl locks are per process) holding the lock on `path`."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              universal_newlines=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_deleted_lock_file_is_taken_back_before_a_second_loop_can_take_it(tmp_path):
    path = str(tmp_path / ".work" / "forever-slurm.lock")
    first = lock.RootLock(path).acquire()
    os.unlink(path)
    first.check()                               # the next pass: made again and locked
    # (read through our own fd: closing any other fd of the file would drop this process's lock)
    assert os.pread(first.fd, 32, 0).strip() == b"%d" % os.getpid() and os.stat(path).st_ino == os.fstat(first.fd).st_ino
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([sys.executable, "-c", HOLD, path], check=True, timeout=30, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first.release()


def test_a_loop_whose_lock_another_loop_took_after_a_purge_stops(tmp_path):
    path = str(tmp_path / ".work" / "forever-slurm.lock")
    first = lock.RootLock(path).acquire()
    os.unlink(path)
    second = hold_elsewhere(path)               # a second loop started before the first's next pass
    try:
        with pytest.raises(LockedError, match=r"lock file was replaced by another file, and another loop "
                                              r"\(pid %d\) holds the new one: this loop stops" % second.pid):
            first.check()
    finally:
        second.stdin.close()
        second.wait(10)
        first.release()


def test_a_lock_file_replaced_by_one_nobody_holds_is_adopted_and_the_file_is_touched_hourly(tmp_path):
    path = str(tmp_path / ".work" / "forever-slurm.lock")
    clock = [0.0]
    first = lock.RootLock(path, clock=lambda: clock[0]).acquire()
    os.unlink(path)
    with open(path, "w") as handle:
        handle.write("12345\n")
    first.check()
    assert os.pread(first.fd, 32, 0).strip() == b"%d" % os.getpid() and os.stat(path).st_ino == os.fstat(first.fd).st_ino
    os.utime(path, (1, 1))
    first.check()
    assert os.stat(path).st_mtime == 1                  # not before an hour
    clock[0] = lock.TOUCH_EVERY + 1
    first.check()
    assert os.stat(path).st_mtime > time.time() - 60    # an age-based purge passes it by
    first.release()


def test_the_running_loop_checks_its_lock_on_every_pass_and_only_one_loop_remains(root, shim_state):
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_PROBE_INTERVAL=0.2\nFS_WAKE=no\n')
    layout = settings.Layout(str(root))
    env = dict(os.environ, PYTHONPATH=SRC)
    argv = [sys.executable, "-m", "forever_slurm", "--root", str(root), "run"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = None
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(layout.lock_file) and open(layout.lock_file).read().strip()):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        os.unlink(layout.lock_file)                         # a scratch purge
        time.sleep(1.5)                                     # several passes
        assert open(layout.lock_file).read().strip() == str(first.pid)
        second = subprocess.run(argv + ["--once"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=60)
        assert second.returncode == 1 and "(pid %d) already runs" % first.pid in second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)


def test_a_loop_that_finds_another_holding_its_lock_stops_with_a_clear_message(root, shim_state):
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_PROBE_INTERVAL=0.2\nFS_WAKE=no\n')
    layout = settings.Layout(str(root))
    env = dict(os.environ, PYTHONPATH=SRC)
    first = subprocess.Popen([sys.executable, "-m", "forever_slurm", "--root", str(root), "run"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    holder = None
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(layout.lock_file) and open(layout.lock_file).read().strip()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        first.send_signal(signal.SIGSTOP)                   # so that the other loop surely gets in first
        try:
            os.unlink(layout.lock_file)
            holder = hold_elsewhere(layout.lock_file)
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(30) == 1
        assert "and another loop (pid %d) holds the new one" % holder.pid in first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        if holder:
            holder.stdin.close()
            holder.wait(10)


# -- 4: closed stdio, a full disk ------------------------------------------------------------------------
def test_run_with_stderr_closed_runs_and_logs_to_its_file(root, shim_slurm):
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(["sh", "-c", 'exec "$0" -m forever_slurm --root "$1" run --once 2>&- >&- <&-',
                           sys.executable, str(root)], env=env, timeout=60)
    assert done.returncode == 0
    text = open(os.path.join(str(root), ".work", "log", "loop.log")).read()
    assert "submitted job" in text
    assert len(shim_slurm.jobs) == 1


def test_status_with_stdout_closed_does_not_fail_silently(root, shim_state):
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(["sh", "-c", 'exec "$0" -m forever_slurm --root "$1" status >&-', sys.executable,
                           str(root)], env=env, timeout=60, stderr=subprocess.PIPE, universal_newlines=True)
    # 3: status's own code for "no loop keeps this root" (nothing runs here), not a silent 1.
    assert done.returncode == 3 and "Traceback" not in done.stderr


def test_a_full_disk_at_start_is_one_clear_line(root, shim_state, monkeypatch, capsys):
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(lock.os, "pwrite", full)
    assert cli.main(["--root", str(root), "run", "--once"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the lock file: No space left on device" in err


def test_any_os_error_met_by_a_command_is_one_line_not_a_traceback(root, monkeypatch, capsys):
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/r/.work/state.json")
    monkeypatch.setattr(run, "run_command", full)
    assert cli.main(["--root", str(root), "run"]) == 1
    err = capsys.readouterr().err
    assert err == ("forever-slurm: /r/.work/state.json: No space left on device; free some space, or check that "
                   "this folder is yours and writable\n")


@pytest.mark.parametrize("name", [b"j\xc3\xb6rg", b"j\xf6rg"])
def test_files_that_name_the_root_hold_its_bytes(tmp_path, name):
    """Traefik's static config (and units, crontab lines) name the root: written as its bytes."""
    from forever_slurm.common import fsutil
    from forever_slurm.systems import traefik, traefik_files
    root = os.path.join(os.fsencode(str(tmp_path)), name)
    os.mkdir(root)
    layout = settings.Layout(os.fsdecode(root))
    layout.make_dirs()
    traefik_files.write_if_changed(layout.traefik_static, traefik.render_static(settings.load(layout), layout),
                                   layout.staging_tmp)
    written = open(os.fsencode(layout.traefik_static), "rb").read()
    assert root + b"/.work/traefik-watch" in written
    fsutil.atomic_write(os.path.join(layout.work, "x"), layout.root)
    assert open(os.path.join(root, b".work", b"x"), "rb").read() == root


# -- 19: an unreadable service folder -------------------------------------------------------------------
def refuse(monkeypatch, function, path):
    """os.<function>(path) fails with EACCES, as for a folder without r/x (tests run as root, which
    chmod cannot stop)."""
    import forever_slurm.common.services as services_mod
    real = getattr(os, function)

    def denied(target, *args, **kwargs):
        if os.fspath(target) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)
        return real(target, *args, **kwargs)
    monkeypatch.setattr(services_mod.os, function, denied)


@pytest.mark.parametrize("function, says", [("listdir", "cannot read this service folder: Permission denied"),
                                            ("stat", "cannot look at this service folder: Permission denied")])
def test_an_unreadable_service_folder_is_reported_as_such(root, monkeypatch, function, says, capsys):
    from forever_slurm.common import services
    folder = root / "services" / "web"
    folder.mkdir(parents=True)
    (folder / "web.sub").write_text("#!/bin/bash\n#SBATCH --job-name web\n")
    (root / ".env").write_text('SERVICE_LIST="web/1"\n')
    layout = settings.Layout(str(root))
    refuse(monkeypatch, function, str(folder))
    with pytest.raises(Exception) as info:
        services.load(layout, "web")
    assert says in str(info.value) and str(folder) in str(info.value) and "no Slurm script" not in str(info.value)
    assert "web" in services.available(layout) or function == "stat"


def test_an_unreadable_services_folder_leaves_the_menu_with_the_bundled_ones(root, monkeypatch):
    from forever_slurm.common import services
    (root / "services").mkdir()
    layout = settings.Layout(str(root))
    refuse(monkeypatch, "listdir", layout.services)
    assert services.available(layout) == services.bundled_names()
