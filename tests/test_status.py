"""status.collect/render: a pure reader built on the planner's own view of each service."""

import json
import os

from forever_slurm.core import model, planner, state
from forever_slurm.systems import traefik
from forever_slurm.common import settings
from forever_slurm.observe import status
from forever_slurm.systems.slurm import Job

from fakes import LoopStandIn


def snapshot_with(jobs, memory, now):
    return state.empty_snapshot()._replace(memory=memory, jobs=jobs, observed_at=now, updated_at=now,
                                           desired={"svc": 2},
                                           routes={"svc": [traefik.Server("http://n1:1", 1)]})


def test_counts_lead_and_health_come_from_the_planner(root):
    (root / ".env").write_text('SERVICE_LIST="svc/2"\n')
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    now = 1000.0
    jobs = [Job("1", "R", "svc", "n1", 3600, 60, "None", "traefik,svc,http://n1:1"),
            Job("2", "R", "svc", "n2", 3600, 60, "None", "traefik,svc,http://n2:2"),
            Job("3", "PD", "svc", "", None, 0, "Resources", "")]
    memory = model.Memory({
        "1": model.JobMemory("svc", seen_at=1, url="http://n1:1", ready_since=900, ever_ready=True),
        "2": model.JobMemory("svc", seen_at=1, url="http://n2:2", ready_since=900, cancel_failures=1),
        "3": model.JobMemory("svc", seen_at=1),
        model.INTENT_PREFIX + "svc:1": model.JobMemory("svc", submitted_at=990),
    }, {"svc": model.ServiceMemory(startup=(30.0,))})
    state.save(layout.state_file, snapshot_with(jobs, memory, now))
    report = status.collect(layout, now=now)
    (svc,) = report["services"]
    assert (svc["running"], svc["pending"], svc["pending_reasons"]) == (2, 2, ["Resources"])
    assert svc["renew_lead_seconds"] == planner.renew_lead(memory.services["svc"], model.Policy())
    health = {j["job_id"]: j["health"] for j in report["jobs"]}
    assert health == {"1": "ready", "2": "stopping (scancel failed, retrying)", "3": "pending"}
    text = status.render(report)
    assert "svc" in text and "loop: NOT RUNNING" in text


def test_a_missing_state_reads_as_empty_without_creating_anything(root):
    layout = settings.Layout(str(root))
    report = status.collect(layout, now=1.0)
    assert report["services"] == [] and report["state_problem"] == ""
    assert os.listdir(str(root)) == []


def _scale_entry(phase, target, held=0, waited=0.0, load=0.0, per_backend=None):
    return {"low": 0, "high": 3, "target": target, "load": load, "per_backend": per_backend,
            "last_request_at": 990.0, "held": held, "held_seconds": waited, "phase": phase}


def test_min_max_services_show_asleep_waking_and_up_with_target_and_load(root):
    (root / ".env").write_text('SERVICE_LIST="a/0-3 b/0-3 c/0-3"\n')
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    snap = state.empty_snapshot()._replace(
        observed_at=1000.0, updated_at=1000.0, desired={"a": 0, "b": 1, "c": 2},
        scale={"a": _scale_entry("asleep", 0), "b": _scale_entry("waking", 1, held=3, waited=12.4),
               "c": _scale_entry("up", 2, load=5.5, per_backend=2.75)})
    state.save(layout.state_file, snap)
    report = status.collect(layout, now=1000.0)
    rows = {s["service"]: s for s in report["services"]}
    assert (rows["a"]["desired"], rows["b"]["desired"], rows["c"]["desired"]) == (0, 1, 2), "the loop's target"
    assert rows["b"]["scale"]["held"] == 3
    text = status.render(report)
    lines = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in "abc"}
    assert "0 (0-3)" in lines["a"] and "asleep" in lines["a"]
    assert "waking, 3 requests held for 12s" in lines["b"]
    assert "up, load 5.5 in flight (2.8 a backend)" in lines["c"]


class _Stop(Exception):
    pass


def test_show_prints_once_or_every_interval_and_reads_only(root, capsys):
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    assert status.show(layout, as_json=True) == status.EXIT_NOT_RUNNING
    assert json.loads(capsys.readouterr().out)["services"] == []
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            raise _Stop()
    try:
        status.show(layout, every=2.5, sleep=sleep)
    except _Stop:
        pass
    out = capsys.readouterr().out
    assert naps == [2.5, 2.5] and out.count("loop: NOT RUNNING") == 2
    assert os.listdir(layout.work) == []


# ---------------------------------------------------------------- a loop that runs, or not

def _stale_root(root, pid, now):
    (root / ".env").write_text('SERVICE_LIST="svc/1"\n')
    layout = settings.Layout(str(root))
    os.makedirs(layout.work, exist_ok=True)
    jobs = [Job("1", "R", "svc", "n1", 3600, 60, "None", "traefik,svc,http://n1:1")]
    memory = model.Memory({"1": model.JobMemory("svc", seen_at=1, url="http://n1:1", ready_since=900,
                                                ever_ready=True)}, {})
    snap = snapshot_with(jobs, memory, now - 300)._replace(pid=pid, desired={"svc": 1})
    state.save(layout.state_file, snap)
    return layout


def test_without_a_running_loop_status_shows_stale_facts_and_exits_3(root, capsys):
    """Both units stopped: status had exited 0 showing the backends routed and "ready" from the last
    saved state, only its header saying the loop was not running."""
    loop = LoopStandIn(settings.Layout(str(root)))
    dead = loop.pid
    loop.stop()                           # its pid stays in the lock file and in state.json
    layout = _stale_root(root, dead, 1000.0)
    report = status.collect(layout, now=1000.0)
    assert report["stale"] is True and report["loop"]["alive"] is False
    text = status.render(report)
    assert "loop: NOT RUNNING (last seen 5m ago)" in text
    assert "nothing keeps these services now: below is what the loop last saw, 5m ago" in text
    assert "last seen ready" in text and " ready" not in text.replace("last seen ready", "")
    assert status.show(layout) == status.EXIT_NOT_RUNNING == 3
    capsys.readouterr()
    assert status.show(layout, as_json=True) == 3 and json.loads(capsys.readouterr().out)["stale"] is True


def test_with_the_loop_holding_its_lock_status_is_current_and_exits_0(root):
    layout = settings.Layout(str(root))
    os.makedirs(layout.work, exist_ok=True)
    loop = LoopStandIn(layout)
    try:
        layout = _stale_root(root, loop.pid, 1000.0)
        report = status.collect(layout, now=1000.0)
        assert report["loop"] == {"pid": loop.pid, "alive": True, "updated_seconds_ago": 300.0}
        assert not report["stale"] and "last seen" not in status.render(report)
        assert status.show(layout) == status.EXIT_RUNNING == 0
    finally:
        loop.stop()
    assert status.collect(layout, now=1000.0)["loop"]["alive"] is False


def test_a_reused_pid_in_the_lock_file_is_not_a_running_loop(root):
    """The lock file keeps the last loop's pid: a live process with that pid that holds no lock on it
    (here: this test's own process) is not the loop."""
    from forever_slurm.observe import loop_alive
    layout = settings.Layout(str(root))
    os.makedirs(layout.work, exist_ok=True)
    with open(layout.lock_file, "w") as handle:
        handle.write("%d\n" % os.getpid())
    assert loop_alive.running_loop_pid(layout) is None


def test_status_json_on_a_root_without_a_setup_prints_a_json_error(tmp_path, capsys):
    """It had printed nothing on stdout (exit 1), so a script reading the JSON got nothing to parse."""
    from forever_slurm import cli
    assert cli.main(["--root", str(tmp_path), "status", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert "has no forever-slurm setup" in answer["error"] and answer["root"] == str(tmp_path)
    assert cli.main(["--root", str(tmp_path), "status"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "has no forever-slurm setup" in captured.err


def test_cli_logs_of_an_unknown_job_and_check_without_env_exit_non_zero(tmp_path, capsys):
    from forever_slurm import cli
    os.makedirs(str(tmp_path / ".work" / "slurm-output"))
    assert cli.main(["--root", str(tmp_path), "logs", "99999"]) == 1
    assert "job 99999: no output file" in capsys.readouterr().err
    assert cli.main(["--root", str(tmp_path), "check"]) == 1
    assert ".env: missing:" in capsys.readouterr().out


def test_status_warns_about_a_key_that_changes_nothing(root):
    (root / ".env").write_text("FS_TYPO=1\n")
    layout = settings.Layout(str(root))
    text = status.render(status.collect(layout, now=1.0))
    assert "settings: %s:1: FS_TYPO is not a forever-slurm setting, so it changes nothing" % layout.env_file in text


def test_status_imports_only_what_it_needs(root):
    """`status` must start fast (bench/status_start): it had imported the whole loop (core/loop, the wake
    proxy's http.server) and http.client, zipfile and more, most of its 0.3-0.8 s."""
    import subprocess
    import sys
    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\n')
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    code = ("import sys, io; sys.path.insert(0, %r)\n"
            "from forever_slurm import cli\n"
            "out, sys.stdout = sys.stdout, io.StringIO()\n"
            "cli.main(['--root', %r, 'status'])\n"
            "sys.stdout = out\n"
            "print(' '.join(sorted(sys.modules)))\n" % (src, str(root)))
    # -S: what the site packages of this Python import at start-up is not ours to count.
    done = subprocess.run([sys.executable, "-S", "-c", code], stdout=subprocess.PIPE, universal_newlines=True,
                          timeout=60)
    loaded = set(done.stdout.split())
    assert "forever_slurm.observe.status" in loaded
    heavy = {"forever_slurm.core.loop", "forever_slurm.core.wake", "forever_slurm.setup.config_steps",
             "http.server", "http.client", "zipfile", "urllib.request", "ssl"}
    assert not heavy & loaded, sorted(heavy & loaded)


def test_a_busy_shared_cluster_is_explained_with_the_line_to_change(root):
    """A limit sbatch refused, a job that waiting will not start, a replacement expected after the job
    it replaces ends, a maintenance window, nodes down: each one line, naming the .sub line."""
    (root / ".env").write_text('SERVICE_LIST="svc/1"\n')
    folder = root / "services" / "svc"
    folder.mkdir(parents=True)
    (folder / "svc.sub").write_text("#!/bin/bash\n#SBATCH --job-name=svc\n#SBATCH --time=2-00:00:00\nexec true\n")
    layout = settings.Layout(str(root))
    os.makedirs(layout.work)
    now = 1000.0
    jobs = [Job("1", "R", "svc", "n1", 60, 3600, "None", "traefik,svc,http://n1:1"),
            Job("2", "PD", "svc", "", None, 0, "Priority", "", starts_in=400),
            Job("3", "PD", "svc", "", None, 0, "PartitionTimeLimit", "")]
    memory = model.Memory({
        "1": model.JobMemory("svc", seen_at=1, url="http://n1:1", ready_since=900, ever_ready=True),
        "2": model.JobMemory("svc", seen_at=1, submitted_at=990), "3": model.JobMemory("svc", seen_at=1)},
        {"svc": model.ServiceMemory(failures=2, next_try=1100.0, last_error=(
            "sbatch failed: sbatch: error: Batch job submission failed: Requested time limit is invalid "
            "(missing or exceeds some limit)"))})
    snap = snapshot_with(jobs, memory, now)._replace(desired={"svc": 1}, cluster={
        "unavailable": {"n7": "down (not responding)"}, "windows": {"svc": "maintenance m at ...: jobs ask 39 min"},
        "read_at": now, "error": ""})
    state.save(layout.state_file, snap)
    report = status.collect(layout, now=now)
    (svc,) = report["services"]
    sub = str(folder / "svc.sub")
    assert svc["limit"] == ("sbatch refused it: a time limit above the partition's MaxTime; change "
                            "#SBATCH --time=2-00:00:00 in %s:3" % sub)
    assert svc["stuck"] == ["job 3 waits for PartitionTimeLimit, which waiting will not change: a time limit "
                            "above the partition's MaxTime; change #SBATCH --time=2-00:00:00 in %s:3" % sub]
    assert svc["late"].startswith("replacement job 2 is expected to start in 6m, 5m after job 1 ends")
    text = status.render(report)
    for line in (svc["limit"], svc["stuck"][0], svc["maintenance"], "n7 down (not responding)"):
        assert line in text
