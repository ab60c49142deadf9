"""Real local cluster, real Traefik: a service folder of the original bash tool, and renewal at the
time limit. Separate from test_real_stack.py so that its module-wide loop is gone before these start."""

import os
import shutil
import tempfile
import threading

import pytest

from harness.stack import Stack, capacity_timeline, failed, find_traefik
from original_tool import ORIGINAL_PY, ORIGINAL_SUB, ORIGINAL_YML, renamed

pytestmark = pytest.mark.e2e

FAST = ["FS_SLEEP_INTERVAL=3", "FS_PROBE_INTERVAL=1", "FS_DRAIN_SECONDS=5", "FS_RENEW_MARGIN=15"]


def two_backends(stack):
    return len(stack.routed()) == 2 and len({s["node"] for s in stack.squeue() if s["state"] == "R"}) == 2


def test_original_bash_tool_service_folder_works_unchanged(local_cluster):
    """The original's hello-python folder (renamed), with its freeport.sh call, .work/ staging and
    placeholder servers, next to the bundled hello-python whose retry middleware it must not clash with."""
    if not find_traefik():
        pytest.skip("traefik is not installed")
    local_cluster.cancel_all(timeout=30)
    base = tempfile.mkdtemp(prefix="fs-legacy-")
    s = Stack(local_cluster, base, "legacy-hello/1 hello-python/1", FAST,
              service_dirs={"legacy-hello": {"legacy-hello.sub": renamed(ORIGINAL_SUB, "legacy-hello"),
                                             "legacy-hello.py": ORIGINAL_PY,
                                             "legacy-hello.yml": renamed(ORIGINAL_YML, "legacy-hello")}})
    try:
        s.start()
        s.wait_for(lambda: s.get("/legacy-hello/x").status == 200 or None, 90, 0.5, "legacy service answering")
        s.wait_for(lambda: s.get("/hello-python/x").status == 200 or None, 90, 0.5, "bundled service answering")
        body = s.get("/legacy-hello/some/path").body
        assert body.startswith("Hello, Python from ") and "/some/path" in body
        rendered = open(os.path.join(s.root, ".work", "traefik-watch", "legacy-hello.yml")).read()
        assert "xxxxx" not in rendered and "yyyyy" not in rendered
        assert os.path.exists(os.path.join(s.root, ".work", "legacy-hello.py"))
        traefik_log = open(os.path.join(s.root, ".work", "log", "traefik.log")).read()
        assert "legacy-hello.yml" not in traefik_log, traefik_log[-2000:]
    finally:
        s.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_time_limit_renewal_without_a_gap(local_cluster):
    """Jobs with a 4-minute limit are replaced before it (the bundled .sub asks for a USR1 warning
    60 s before, which Slurm may send 60 s earlier still: renewal starts 30 + 60 + 60 s before the end):
    no failed request, N backends throughout."""
    if not find_traefik():
        pytest.skip("traefik is not installed")
    local_cluster.cancel_all(timeout=30)
    base = tempfile.mkdtemp(prefix="fs-renew-")
    s = Stack(local_cluster, base, "hello-python/2", FAST + ["FS_RENEW_LEAD=30"])
    try:
        s.start(extra_env={"SBATCH_TIMELIMIT": "4"})
        s.wait_for(lambda: two_backends(s), 90, 0.5, "two routed jobs")
        first_ids = {j["id"] for j in s.squeue()}
        result = {}

        def watch():
            result["short"], result["points"] = capacity_timeline(
                s, 160, 2, stop_when=lambda: not first_ids & {j["id"] for j in s.squeue() if j["state"] == "R"}
                and len(s.routed()) >= 2)
        watcher = threading.Thread(target=watch)
        watcher.start()
        samples = s.load(seconds=130, rate=5)
        watcher.join(180)
        bad = failed(samples)
        print("\nrenewal of 2 jobs at their time limit: %d failed of %d requests, %.1f s with fewer than 2 "
              "ready backends" % (len(bad), len(samples), result["short"]))
        now_ids = {j["id"] for j in s.squeue() if j["state"] == "R"}
        assert not first_ids & now_ids, "the first jobs should have been replaced by now\n" + s.loop_log()[-4000:]
        assert "drained for renewal" in s.loop_log()
        assert not bad, [(s_.status, s_.body[:60]) for s_ in bad]
        assert result["short"] <= 1.0
    finally:
        s.stop()
        shutil.rmtree(base, ignore_errors=True)
