"""`bin/demo start` as a newcomer runs it: it answers from two jobs and leaves no errors behind in `status`.

The demo waits for Traefik to route both jobs (Traefik's own metrics) before it sends a request: it
had polled through Traefik while the jobs were queued, and the first `status` showed those 503s as
"5XX 18.8 %", which a newcomer reads as failures.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from harness.net import free_port

pytestmark = pytest.mark.e2e

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_answers_from_two_jobs_and_status_shows_no_errors():
    if not shutil.which("traefik"):
        pytest.skip("needs traefik on PATH (make provision)")
    # Short: slurmd's job-step sockets live under the cluster directory (at most 58 characters).
    demo_dir = tempfile.mkdtemp(prefix="fsdemo", dir="/tmp")
    os.chmod(demo_dir, 0o755)       # munged runs as its own user and must reach the cluster's folder
    web, ping = free_port(), free_port()
    while ping == web:
        ping = free_port()
    env = dict(os.environ, FOREVER_DEMO_DIR=demo_dir, FS_TRAEFIK_PORT=str(web), FS_TRAEFIK_PING_PORT=str(ping))
    demo = [sys.executable, os.path.join(TOP, "bin", "demo")]
    try:
        started = subprocess.run(demo + ["start"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 universal_newlines=True, timeout=400)
        assert started.returncode == 0, started.stdout
        answers = [line for line in started.stdout.splitlines() if line.startswith("Hello")]
        assert len(answers) == 6 and len({a.split(" ! ")[0] for a in answers}) == 2, started.stdout
        root = os.path.join(demo_dir, "root")
        shown = subprocess.run([sys.executable, os.path.join(root, "forever_slurm.pyz"), "--root", root,
                                "status", "--json"], env=env, stdout=subprocess.PIPE, universal_newlines=True,
                               timeout=60)
        traffic = json.loads(shown.stdout)["traffic"]["services"]["hello-python"]
        assert traffic["requests"] >= 6
        assert traffic["share_5xx"] == 0, traffic
    finally:
        subprocess.run(demo + ["stop"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        shutil.rmtree(demo_dir, ignore_errors=True)
