"""Issue 11: the loop never dies, never forgets its own jobs, and one service never hurts another.

Each class of fault gets its own tests, against the in-process Slurm (fakes.FakeSlurm) with fake clocks;
large classes (Comments, odd bytes) are fed randomised inputs with a fixed seed.
"""

import errno
import json
import logging
import os
import random

import pytest

from forever_slurm.common import fsutil, settings
from forever_slurm.core import absorb, lock, loop, model, outcomes, planner, probe, routes, scheduler, state
from forever_slurm.observe import status
from forever_slurm.common.errors import ConfigError

from fakes import add_other_service, make_controller, routed

TWO = 'SERVICE_LIST="hello-python/1 other/1"\nFS_SPREAD=no\n'


def watch_file(layout, service):
    path = os.path.join(layout.watch, service + ".yml")
    return open(path).read() if os.path.exists(path) else ""


def two_services(root, fake_slurm, prober=None):
    add_other_service(root)
    ctl, clock, prober_, layout = make_controller(root, fake_slurm, TWO)
    if prober is not None:
        ctl.probe_all = prober
    routed(ctl, clock, fake_slurm)
    return ctl, clock, layout


def job_of(fake_slurm, name):
    return [j for j in fake_slurm.jobs if j["name"] == name and j["state"] == "R"][0]


# -- 1. bad data never stops the loop ----------------------------------------------------------------
EVIL_HOSTS = ["a..b", "x" * 100, "-a.b", "a_b-", "169.254.169.254", "0xa9fea9fe", "[::ffff:a9fe:a9fe]", "\u00e9t\u00e9", "xn--", "[::1", "[zz::1]", "1.2.3.999",
              "." * 5, "a." * 130]
EVIL_PORTS = ["\u0664\u0660", "\uff18\uff10", "0", "65536", "99999", "-1", "8O"]


def test_comments_the_http_client_would_choke_on_are_refused_with_the_real_prober(root, fake_slurm):
    fake_slurm.nodes = ["127.0.0.1"]    # backends the real prober reaches without asking DNS (5 s at times)
    ctl, clock, layout = two_services(root, fake_slurm, prober=probe.probe_all)
    victim = job_of(fake_slurm, "hello-python")["id"]
    for host in EVIL_HOSTS:
        for port in ["80"] + EVIL_PORTS[:2]:
            fake_slurm.set_comment(victim, "traefik,hello-python,http://%s:%s" % (host, port))
            clock.sleep(10)
            assert ctl.look() is True
            assert ctl.snapshot.memory.jobs[victim].comment_problem
            assert "servers: []" in watch_file(layout, "hello-python")


def test_ipv6_literals_are_one_rule_for_the_parser_and_the_writer():
    from forever_slurm.systems import traefik
    from forever_slurm.common import urls
    for url in ["http://[::1]:8080", "http://[fd12::1]:1", "http://node7:40123", "https://10.0.0.1:443",
                "http://gpu_node01:8000"]:
        assert absorb.parse_comment("traefik,s," + url, "s") == (url, "")
        assert traefik._server_entry(traefik.Server(url)) == {"url": url}
    for url in ["http://[::g]:80", "http://a..b:80", "http://h:\u0664\u0660", "http://h:80\n", "http://h:80/x",
                "http://[fe80::1]:1", "http://169.254.169.254:80"]:
        assert absorb.parse_comment("traefik,s," + url, "s")[0] is None
        assert not urls.valid_backend_url(url)
        with pytest.raises(ConfigError):
            traefik._server_entry(traefik.Server(url))


def random_comment(rng, service):
    pieces = ["traefik", ",", service, "other", "http://", "https://", "node1", ":", "40001", "/", "|", "\n",
              "\r", "\x1e", "\u2028", "\x00", "{{", "}}", "%", "(null)", "\ufffd", "[", "]", "::1"]
    pieces += EVIL_HOSTS + EVIL_PORTS
    return "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))


def test_random_comments_never_stop_the_loop_nor_add_a_job(root, fake_slurm):
    ctl, clock, layout = two_services(root, fake_slurm)
    rng = random.Random(1234)
    ids = sorted(j["id"] for j in fake_slurm.jobs)
    victim = job_of(fake_slurm, "hello-python")["id"]
    for _ in range(150):
        fake_slurm.set_comment(victim, random_comment(rng, "hello-python"))
        clock.sleep(10)
        assert ctl.look() is True
        assert sorted(ctl.snapshot.memory.jobs) == ids                 # no phantom job, none lost
        for servers in ctl.snapshot.routes.values():
            from forever_slurm.common import urls
            assert all(urls.valid_backend_url(s.url) for s in servers)
        assert "node" in watch_file(layout, "other")                   # the other service is still routed


def test_a_comment_shaped_like_squeue_rows_never_makes_a_phantom_job(root, fake_slurm):
    ctl, clock, layout = two_services(root, fake_slurm)
    victim = job_of(fake_slurm, "hello-python")["id"]
    before = sorted(ctl.snapshot.memory.jobs)
    for sep in ["\n", "\x1e", "\u2028", "\r\n", "\x85"]:
        fake = "9999|R|hello-python|node9|1:00:00|0:01|None|%s|traefik,hello-python,http://evil:1" % (
            layout.slurm_output)
        fake_slurm.set_comment(victim, "traefik,hello-python,http://node1:40001" + sep + fake)
        clock.sleep(10)
        ctl.look()
        assert sorted(ctl.snapshot.memory.jobs) == before
        assert "evil" not in watch_file(layout, "hello-python")


def test_odd_bytes_from_squeue_are_skipped_and_reported_once(root, fake_slurm, caplog):
    ctl, clock, layout = two_services(root, fake_slurm)
    fake_slurm.squeue_extra_bytes = b"\xff\xfe garbage \x00\x80\n"
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        clock.sleep(10)
        assert ctl.look() is True
    assert caplog.text.count("not a row (set aside") == 1
    assert len(ctl.snapshot.memory.jobs) == 2


def test_a_bug_while_planning_one_service_costs_only_that_service(root, fake_slurm, monkeypatch, caplog):
    ctl, clock, layout = two_services(root, fake_slurm)
    hello = watch_file(layout, "hello-python")
    real = planner.plan_service

    def broken(view, *args, **kwargs):
        if view.name == "hello-python":
            raise ZeroDivisionError("planner bug")
        return real(view, *args, **kwargs)
    monkeypatch.setattr(planner, "plan_service", broken)
    (root / ".env").write_text('SERVICE_LIST="hello-python/1 other/2"\nFS_SPREAD=no\n')
    ctl.settings = settings.load(layout)
    for _ in range(3):
        clock.sleep(10)
        ctl.look()
    assert len([j for j in fake_slurm.jobs if j["name"] == "other"]) == 2   # the other goes on
    assert watch_file(layout, "hello-python") == hello                             # last good file kept
    assert caplog.text.count("Traceback") == 1 and "planning hello-python failed" in caplog.text


def test_the_loop_goes_on_after_a_bug_in_a_cycle(root, fake_slurm, caplog):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    real = ctl.look
    seen = []

    def look():
        seen.append(clock.now)
        if len(seen) == 1:
            raise KeyError("bug")
        return real()
    ctl.look = look
    scheduler.run_forever(ctl, lambda: len(seen) >= 3, monotonic=clock, wait=clock.sleep)
    assert len(seen) == 3 and "KeyError" in caplog.text and "the loop goes on" in caplog.text


# -- 2. a job it submitted is never forgotten ------------------------------------------------------
def scale_to_zero(ctl, layout, clock):
    """SERVICE_LIST emptied: ready jobs drain first (FS_DRAIN_SECONDS, 20 s), then are cancelled."""
    with open(layout.env_file, "w") as handle:
        handle.write('SERVICE_LIST=""\n')
    ctl.settings = settings.load(layout)
    for _ in range(4):
        clock.sleep(10)
        ctl.look()


def foreign_job(root, fake_slurm, name="hello-python"):
    script = root / ("own-%s.sub" % name)
    script.write_text("#!/bin/bash\n#SBATCH --job-name %s\nsleep 1\n" % name)
    assert fake_slurm.sbatch_as_user(script)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage", "wrong types", "directory"])
def test_after_state_json_is_lost_its_own_jobs_are_rebuilt_from_slurm(root, fake_slurm, damage):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    routed(ctl, clock, fake_slurm)
    foreign_job(root, fake_slurm)
    ours = sorted(ctl.snapshot.memory.jobs)
    text = open(layout.state_file).read()
    os.unlink(layout.state_file)
    if damage == "truncated":
        open(layout.state_file, "w").write(text[:len(text) // 2])
    elif damage == "garbage":
        open(layout.state_file, "wb").write(os.urandom(3000))
    elif damage == "wrong types":
        data = json.loads(text)
        at = data["fields"]["job"].index("submitted_at")
        for m in data["jobs"].values():
            m[at] = "yesterday"
        data["services"] = []
        open(layout.state_file, "w").write(json.dumps(data))
    elif damage == "directory":
        os.mkdir(layout.state_file)
    again = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                            probe_all=prober)
    clock.sleep(10)
    fake_slurm.calls.clear()
    again.look()
    assert sorted(again.snapshot.memory.jobs) == ours
    assert not fake_slurm.commands("sbatch")    # nothing submitted twice
    scale_to_zero(again, layout, clock)
    cancelled = sorted(i for c in fake_slurm.calls if c[0] == "scancel" for i in c[1:])
    assert cancelled == ours                                          # ours cancelled, the foreign one not


def test_a_kill_between_sbatch_and_saving_neither_orphans_nor_doubles(root, fake_slurm, monkeypatch):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    saved = []
    real_save = state.save
    monkeypatch.setattr(state, "save", lambda path, snap: (saved.append(state.to_json(snap)), real_save(path, snap)))
    ctl.look()
    assert len(fake_slurm.jobs) == 1
    intent_only = saved[0]                                  # what was on disk while sbatch ran
    assert any(k.startswith(model.INTENT_PREFIX) for k in json.loads(intent_only)["jobs"])
    monkeypatch.setattr(state, "save", real_save)
    open(layout.state_file, "w").write(intent_only)         # the loop died right after sbatch
    again = loop.Controller(layout, settings.load(layout), fake_slurm.client(), clock=clock,
                            probe_all=prober)
    for _ in range(3):
        clock.sleep(10)
        again.look()
    assert len(fake_slurm.jobs) == 1                  # not doubled
    assert list(again.snapshot.memory.jobs) == [fake_slurm.jobs[0]["id"]]   # and not orphaned


def test_an_intent_that_never_shows_up_is_dropped_without_counting_a_crash():
    memory, keys = outcomes.record_intents(model.empty_memory(), [model.Submit("svc")], 1000.0)
    memory, events = absorb.absorb(memory, [], 1000.0 + 121, model.Policy())
    assert memory.jobs == {} and "never showed up" in events[0] and "svc" not in memory.services


def test_same_named_jobs_it_did_not_submit_are_never_counted_or_routed(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    foreign_job(root, fake_slurm)
    fake_slurm.publish_all()
    foreign = fake_slurm.jobs[0]
    ctl.look()
    fake_slurm.publish_all()
    clock.sleep(10)
    ctl.look()
    ours = [j for j in fake_slurm.jobs if j["id"] != foreign["id"]]
    assert len(ours) == 1                                             # submitted its own all the same
    text = watch_file(layout, "hello-python")
    assert ours[0]["comment"].split(",")[2] in text and foreign["comment"].split(",")[2] not in text
    report = status.collect(layout, now=clock.now)
    rows = {j["job_id"]: j for j in report["jobs"]}
    assert rows[foreign["id"]]["owned"] is False and rows[foreign["id"]]["health"].startswith("foreign")
    assert "foreign" in status.render(report)


# -- 3. filesystem faults --------------------------------------------------------------------------
def test_a_full_disk_is_logged_once_retried_and_nothing_is_submitted_unrecorded(root, fake_slurm, monkeypatch,
                                                                                caplog):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    real = fsutil.atomic_write

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fsutil, "atomic_write", full)
    for _ in range(3):
        clock.sleep(10)
        ctl.look()
    assert fake_slurm.jobs == []
    assert caplog.text.count("No space left on device; retrying") == 1
    assert "state" in ctl.faults
    monkeypatch.setattr(fsutil, "atomic_write", real)
    clock.sleep(10)
    ctl.look()
    assert len(fake_slurm.jobs) == 1 and "state" not in ctl.faults
    assert list(state.load(layout.state_file).memory.jobs) == [fake_slurm.jobs[0]["id"]]


def test_the_disk_reserve_lets_the_loop_record_a_submission_and_drop_a_gone_job(root, fake_slurm, monkeypatch):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    routed(ctl, clock, fake_slurm)
    assert os.path.getsize(ctl.reserve.path) == ctl.reserve.size
    real = fsutil.atomic_write

    def full_while_reserved(*args, **kwargs):
        if os.path.exists(ctl.reserve.path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)
    monkeypatch.setattr(fsutil, "atomic_write", full_while_reserved)
    monkeypatch.setattr(fsutil.Reserve, "ensure", lambda self: False)       # the disk stays full
    gone = fake_slurm.jobs[0]
    prober.dead.add(gone["comment"].split(",")[2])                          # the job dies
    clock.sleep(2)
    ctl.probe_pass()
    assert gone["comment"].split(",")[2] not in watch_file(layout, "hello-python")   # out of Traefik
    fake_slurm.job(gone["id"])["state"] = "F"
    clock.sleep(10)
    ctl.look()
    saved = state.load(layout.state_file)
    new = [j["id"] for j in fake_slurm.jobs if j["id"] != gone["id"]]
    assert gone["id"] not in saved.memory.jobs and sorted(saved.memory.jobs) == new   # the replacement recorded
    assert not os.path.exists(ctl.reserve.path) and "state" not in ctl.faults


def test_an_unwritable_watch_folder_keeps_the_others_and_is_shown(root, fake_slurm, monkeypatch):
    ctl, clock, layout = two_services(root, fake_slurm)
    real = fsutil.atomic_write

    def refuse_hello(path, *args, **kwargs):
        if path.endswith("hello-python.yml"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, *args, **kwargs)
    monkeypatch.setattr(fsutil, "atomic_write", refuse_hello)
    monkeypatch.setattr(routes.traefik_files, "write_if_changed",
                        lambda path, text, tmp: refuse_hello(path, text, tmp_dir=tmp, only_if_changed=True))
    prober_dead = job_of(fake_slurm, "other")
    clock.sleep(10)
    ctl.look()
    assert "traefik:hello-python" in ctl.faults
    report = status.collect(layout, now=clock.now)
    assert "traefik:hello-python" in report["faults"] and "Read-only" in status.render(report)
    assert prober_dead["comment"].split(",")[2] in watch_file(layout, "other")


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "huge", "binary"])
def test_a_sub_that_is_not_a_sane_file_is_refused_and_the_others_go_on(root, fake_slurm, kind, caplog):
    add_other_service(root)
    folder = root / "services" / "hello-python"
    folder.mkdir(parents=True)
    target = folder / "hello-python.sub"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(str(target))
    elif kind == "device":
        os.symlink("/dev/zero", str(target))
    elif kind == "huge":
        target.write_bytes(b"#!/bin/bash\n#SBATCH --job-name hello-python\n" + b"#" * (2 * 1024 * 1024))
    else:
        target.write_bytes(b"#!/bin/bash\n#SBATCH --job-name hello-python\n\xff\xfe\n")
    ctl, clock, prober, layout = make_controller(root, fake_slurm, TWO)
    ctl.look()
    names = [j["name"] for j in fake_slurm.jobs]
    assert names == ["other"]
    assert "hello-python.sub" in ctl.snapshot.service_errors["hello-python"]


def test_an_unusable_lock_file_is_a_clear_error(root):
    from forever_slurm.common.errors import ForeverError
    layout = settings.Layout(str(root))
    os.makedirs(layout.lock_file)            # a directory where the lock file should be
    with pytest.raises(ForeverError, match="cannot open the lock file"):
        lock.RootLock(layout.lock_file).acquire()


# -- 6. time, retries ------------------------------------------------------------------------------
def test_a_wall_clock_jump_back_does_not_stop_looking_at_slurm(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/1"\n')
    routed(ctl, clock, fake_slurm)
    wall = {"offset": 0.0}
    ctl.clock = lambda: clock.now + wall["offset"]
    fake_slurm.calls.clear()
    start = clock.now
    looks = []
    real = ctl.look

    def look():
        looks.append(clock.now)
        if len(looks) == 2:
            wall["offset"] = -600.0          # the wall clock jumps back 10 minutes
        return real()
    ctl.look = look
    scheduler.run_forever(ctl, lambda: clock.now - start > 60, monotonic=clock, wait=clock.sleep)
    assert len(fake_slurm.commands("squeue")) >= 5


def test_a_failing_scancel_backs_off_and_the_route_does_not_flap(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm, 'SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n')
    routed(ctl, clock, fake_slurm)
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    ctl.settings = settings.load(layout)
    fake_slurm.fail["scancel"] = "scancel: error: Kill job error: Access/permission denied\n"
    seen_backends = []
    attempts = []
    for step in range(40):
        clock.sleep(5)
        before = len(fake_slurm.commands("scancel"))
        ctl.look() if step % 2 == 0 else ctl.probe_pass()
        if len(fake_slurm.commands("scancel")) > before:
            attempts.append(clock.now)
        if attempts:        # (before that the surplus job drains: weight 0, still listed)
            seen_backends.append(watch_file(layout, "hello-python").count("url:"))
    assert set(seen_backends) == {1}                                  # never back to 2, never 0
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) >= 3 and gaps == sorted(gaps) and gaps[-1] > gaps[0]   # backing off
    del fake_slurm.fail["scancel"]
    for _ in range(20):
        clock.sleep(10)
        ctl.look()
    assert sorted(j["state"] for j in fake_slurm.jobs) == ["CA", "R"]


# -- 5. readers read ---------------------------------------------------------------------------------
def tree(root):
    found = {}
    for folder, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            found[path] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def test_status_and_check_change_nothing_even_with_a_corrupt_state_and_bundled_services(root, shim_state, capsys):
    from forever_slurm import cli
    (root / ".env").write_text('SERVICE_LIST="hello-python/2 llama-cpp-server/1"\n')
    os.makedirs(str(root / ".work"))
    (root / ".work" / "state.json").write_text('{"jobs": {"1": {"service": ')      # truncated
    before = tree(root)
    assert cli.main(["--root", str(root), "status"]) == 3      # no loop runs here
    assert cli.main(["--root", str(root), "status", "--json"]) == 3
    assert cli.main(["--root", str(root), "check"]) == 0
    assert tree(root) == before
    out = capsys.readouterr().out
    assert "state.json: cannot be read" in out and "bundled" in out


def test_logs_finds_the_newest_job_of_a_service_from_memory_or_output_files(root):
    from forever_slurm.observe import joblog
    layout = settings.Layout(str(root))
    os.makedirs(layout.slurm_output)
    for job_id in ("7", "12"):
        (root / ".work" / "slurm-output" / ("svc-%s.out" % job_id)).write_text("job %s\n" % job_id)
        os.utime(str(root / ".work" / "slurm-output" / ("svc-%s.out" % job_id)), (int(job_id), int(job_id)))
    empty = state.empty_snapshot()._replace(desired={"svc": 1})
    assert joblog.targets(layout, empty) == [("12", "svc")]
    memory = model.Memory({"9": model.JobMemory("svc"), "10": model.JobMemory("svc"),
                               model.INTENT_PREFIX + "svc:1": model.JobMemory("svc")}, {})
    assert joblog.targets(layout, empty._replace(memory=memory)) == [("10", "svc")]
    assert joblog.targets(layout, empty, "\u00b2") == []                   # not a job id, not a service
    assert joblog.targets(layout, empty, "7") == [("7", None)]


def test_an_unwritable_log_folder_does_not_stop_the_loop(root, shim_state, capsys):
    from forever_slurm import cli
    (root / ".env").write_text('SERVICE_LIST="hello-python/1"\n')
    os.makedirs(str(root / ".work" / "log" / "loop.log"))        # a folder where the log file should be
    assert cli.main(["--root", str(root), "run", "--once"]) == 0
    assert "logging to stderr only" in capsys.readouterr().err
    (root / ".work" / "bin").rename(root / ".work" / "bin.old")
    (root / ".work" / "bin").write_text("a file where a folder should be")
    assert cli.main(["--root", str(root), "run", "--once"]) == 1
    assert "cannot create the folders under" in capsys.readouterr().err      # one clear line, no traceback


def test_an_empty_answer_while_every_backend_still_answers_is_not_believed_at_once(root, fake_slurm, caplog):
    """One empty squeue answer (exit 0, nothing printed: a site's wrapper, a controller restarted from
    an old state) had dropped every route and submitted a job. It is asked again first; an answer that
    says the same twice is believed."""
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    routed(ctl, clock, fake_slurm)
    before = watch_file(layout, "hello-python")
    saved = fake_slurm.data["jobs"]
    fake_slurm.data["jobs"] = []
    fake_slurm.calls.clear()
    clock.sleep(10)
    assert ctl.look() is False
    assert [c[0] for c in fake_slurm.calls] == ["squeue"] and watch_file(layout, "hello-python") == before
    assert "not believed" in caplog.text and ctl.next_look_in() == planner.FOLLOW_UP_DELAY
    fake_slurm.data["jobs"] = saved                          # the next answer is whole again
    clock.sleep(2)
    assert ctl.look() is True and watch_file(layout, "hello-python") == before
    assert [c[0] for c in fake_slurm.calls] == ["squeue", "squeue"]
    fake_slurm.data["jobs"] = []
    for _ in range(2):                                        # said twice: believed
        clock.sleep(2)
        ctl.look()
    assert "sbatch" in [c[0] for c in fake_slurm.calls]


def test_a_job_whose_server_stopped_answering_is_believed_gone_at_once(root, fake_slurm):
    ctl, clock, prober, layout = make_controller(root, fake_slurm)
    routed(ctl, clock, fake_slurm)
    gone = fake_slurm.data["jobs"].pop(0)
    prober.dead.add(gone["comment"].split(",")[2])
    clock.sleep(2)
    ctl.probe_pass()
    fake_slurm.calls.clear()
    assert ctl.look() is True and "sbatch" in [c[0] for c in fake_slurm.calls]
