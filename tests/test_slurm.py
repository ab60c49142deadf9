"""slurm.py: parsers over captured squeue output and sbatch scripts; argv building."""

import pytest

from forever_slurm import slurm
from forever_slurm.errors import CommandError

CAPTURED = """\
4101|R|hello-python|node1|7:59:31|0:29|None|traefik,hello-python,http://vm:40123
4102|PD|hello-python||8:00:00|0:00|Resources|(null)
4103|R|llama|node2|1-23:59:59|1:02:03|None|traefik,llama,http://vm:1|odd|pipes
4104|CG|hello-python|node3|0:00|8:00:00|None|(null)
slurm_load_jobs error: Unable to contact slurm controller
4105|R|x|node1|UNLIMITED|5-00:00:00|None|
"""


def test_parse_captured_output():
    jobs, junk = slurm.parse_squeue(CAPTURED)
    assert [j.job_id for j in jobs] == ["4101", "4102", "4103", "4104", "4105"]
    first = jobs[0]
    assert (first.state, first.name, first.nodes) == ("R", "hello-python", "node1")
    assert first.time_left == 7 * 3600 + 59 * 60 + 31 and first.time_used == 29
    assert first.comment == "traefik,hello-python,http://vm:40123"
    assert jobs[1].comment == "" and jobs[1].reason == "Resources" and jobs[1].pending
    assert jobs[2].time_left == 86400 + 23 * 3600 + 59 * 60 + 59
    assert jobs[2].comment == "traefik,llama,http://vm:1|odd|pipes"   # comment last: pipes survive
    assert not jobs[3].active                                          # completing
    assert jobs[4].time_left is None and jobs[4].time_used == 5 * 86400
    assert junk == ["slurm_load_jobs error: Unable to contact slurm controller"]


@pytest.mark.parametrize("text,seconds", [
    ("0:05", 5), ("12:34", 754), ("1:00:00", 3600), ("2-03:04:05", 2 * 86400 + 3 * 3600 + 245),
    ("UNLIMITED", None), ("NOT_SET", None), ("INVALID", None), ("N/A", None), ("", None),
])
def test_parse_duration(text, seconds):
    assert slurm.parse_duration(text) == seconds


@pytest.mark.parametrize("script,name,line", [
    ('#!/bin/bash\n#SBATCH --job-name "hello-python"\n', "hello-python", 2),
    ("#!/bin/bash\n#SBATCH --time 1:00\n#SBATCH --job-name=svc  # comment\n", "svc", 3),
    ("#!/bin/bash\n#SBATCH -J svc\n", "svc", 2),
    ("#!/bin/bash\n## #SBATCH --job-name off\n#SBATCH --mem 1\n", None, None),
    ("#!/bin/bash\necho hi\n#SBATCH --job-name late\n", None, None),   # sbatch stops at the first command
])
def test_script_job_name(script, name, line):
    assert slurm.script_job_name(script) == (name, line)


class FakeRun:
    def __init__(self, stdout="", returncode=0, stderr=""):
        self.calls = []
        self.stdout, self.returncode, self.stderr = stdout, returncode, stderr

    def __call__(self, argv, timeout=None, env=None, cwd=None):
        self.calls.append((argv, env))
        if self.returncode:
            raise CommandError(argv, self.returncode, self.stderr)

        class Done:
            pass
        done = Done()
        done.stdout, done.stderr, done.returncode = self.stdout, self.stderr, 0
        return done


def test_observe_is_one_squeue_with_a_clean_environment():
    run = FakeRun(stdout=CAPTURED)
    cluster = slurm.Slurm(run=run, environ={"SLURM_TIME_FORMAT": "standard"})
    jobs = cluster.observe()
    assert len(jobs) == 5 and len(run.calls) == 1
    assert run.calls[0][0] == ["squeue", "--me", "-h", "-t", "all", "-o", slurm.SQUEUE_FORMAT]


def test_default_environment_drops_squeue_variables(monkeypatch):
    monkeypatch.setenv("SQUEUE_FORMAT", "%i")
    monkeypatch.setenv("SLURM_CONF", "/x/slurm.conf")
    env = slurm.Slurm()._env
    assert "SQUEUE_FORMAT" not in env and env["SLURM_TIME_FORMAT"] == "standard"
    assert env["SLURM_CONF"] == "/x/slurm.conf"


def test_submit_parses_parsable_output_with_cluster():
    run = FakeRun(stdout="4242;cluster\n")
    cluster = slurm.Slurm(run=run, environ={})
    assert cluster.submit("/r/.work/s.sub", "/r/.work/slurm-output", exclude=("node1", "node2"),
                          output="%x-%j.out", extra_env={"FOREVER_ROOT": "/r"}) == "4242"
    argv, env = run.calls[0]
    assert argv == ["sbatch", "--parsable", "--chdir=/r/.work/slurm-output", "--exclude=node1,node2",
                    "--output=%x-%j.out", "/r/.work/s.sub"]
    assert env["FOREVER_ROOT"] == "/r"


def test_submit_without_job_id_is_an_error():
    cluster = slurm.Slurm(run=FakeRun(stdout="sbatch: warning only\n"), environ={})
    with pytest.raises(CommandError, match="no job id"):
        cluster.submit("s.sub", "/tmp")


def test_failed_squeue_raises_with_stderr():
    run = FakeRun(returncode=1, stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    with pytest.raises(CommandError) as info:
        slurm.Slurm(run=run, environ={}).observe()
    assert "Unable to contact" in str(info.value) and info.value.returncode == 1
