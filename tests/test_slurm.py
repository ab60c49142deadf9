"""slurm.py: parsers over captured squeue output and sbatch scripts; argv building."""

import random
import re
import time

import pytest

from forever_slurm.systems import slurm
from forever_slurm.common import sbatch_script
from forever_slurm.common.errors import CommandError

NOW = 1_800_000_000.0


def at(offset):
    """A SLURM_TIME_FORMAT=standard time `offset` seconds from NOW."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW + offset))


ROWS = [
    # %A      %t    %j              %N       %S        %e                        %r           %Z   %k
    ("4101", "R", "hello-python", "node1", at(-29), at(7 * 3600 + 59 * 60 + 31), "None", "/r/.work/slurm-output",
     "traefik,hello-python,http://vm:40123"),
    ("4102", "PD", "hello-python", "", "N/A", "N/A", "Resources", "/r/.work/slurm-output", "(null)"),
    ("4103", "R", "llama", "node2", at(-3723), at(86400 + 23 * 3600 + 59 * 60 + 59), "None", "/home/u",
     "traefik,llama,http://vm:1|odd|pipes"),
    ("4104", "CG", "hello-python", "node3", at(-8 * 3600), at(0), "None", "/r/.work/slurm-output", "(null)"),
    ("4105", "R", "x", "node1", at(-5 * 86400), "NONE", "None", "/tmp", ""),
]


def squeue_output(fmt, rows):
    """What squeue prints for `-o fmt`: each %X replaced by the row's field, one line per row."""
    codes = [code[1] for code in slurm.FIELD_CODES]

    def one(row):
        fields = dict(zip(codes, row))
        return re.sub(r"%([A-Za-z])", lambda m: fields.get(m.group(1), ""), fmt)
    return "".join(one(row) + "\n" for row in rows)


def parse(rows, markers=None, cache=None):
    markers = markers or slurm.new_markers()
    return slurm.parse_squeue(squeue_output(markers.format, rows), markers, NOW, cache)


def test_parse_rows():
    jobs, junk = parse(ROWS)
    assert junk == []
    assert [j.job_id for j in jobs] == ["4101", "4102", "4103", "4104", "4105"]
    first = jobs[0]
    assert (first.state, first.name, first.nodes, first.workdir) == ("R", "hello-python", "node1",
                                                                     "/r/.work/slurm-output")
    assert first.time_left == 7 * 3600 + 59 * 60 + 31 and first.time_used == 29
    assert first.comment == "traefik,hello-python,http://vm:40123"
    assert jobs[1].comment == "" and jobs[1].reason == "Resources" and jobs[1].pending
    assert jobs[2].time_left == 86400 + 23 * 3600 + 59 * 60 + 59
    assert jobs[2].comment == "traefik,llama,http://vm:1|odd|pipes"
    assert not jobs[3].active                                          # completing
    assert jobs[4].time_left is None and jobs[4].time_used == 5 * 86400


def test_text_that_is_not_a_row_is_junk_not_a_job():
    markers = slurm.new_markers()
    text = "slurm_load_jobs error: Unable to contact slurm controller\n" + squeue_output(markers.format, ROWS[:1])
    text += markers.row + "notanid" + markers.field * 8 + "\n"
    jobs, junk = slurm.parse_squeue(text, markers, NOW)
    assert [j.job_id for j in jobs] == ["4101"] and len(junk) == 2


def row_shaped(rng):
    """A string that looks like one or more squeue rows, in any format this module ever used."""
    other = slurm.new_markers()
    pieces = ["9%03d|R|hello-python|node9|1:00:00|0:01|None|traefik,hello-python,http://evil:%d" % (
        rng.randrange(1000), rng.randrange(1, 65536)),
        other.row + other.field.join(["9999", "R", "hello-python", "node9", "1:00:00", "0:01", "None",
                                      "/r/.work/slurm-output", "traefik,hello-python,http://evil:1"])]
    separators = ["\n", "\r\n", "\r", "\x1e", "\x1c", "\x1d", "\x85", "\u2028", "\u2029", "\x00", "\v", "\f"]
    return "".join(rng.choice(separators) + rng.choice(pieces) for _ in range(rng.randrange(1, 4)))


def test_comments_and_names_can_never_add_or_split_a_job():
    rng = random.Random(11)
    for _ in range(300):
        rows = []
        for index in range(rng.randrange(1, 6)):
            comment = rng.choice(["", "(null)", "traefik,svc,http://n:1"]) + row_shaped(rng)
            name = rng.choice(["svc", "svc" + row_shaped(rng), "a|b", "x\ny"])
            rows.append((str(5000 + index), rng.choice(["R", "PD", "CG", "CA"]), name, "node1", "1:00", "0:01",
                         "None", "/r/.work/slurm-output", comment))
        jobs, junk = parse(rows)
        assert junk == []
        assert [j.job_id for j in jobs] == [r[0] for r in rows]
        assert [j.workdir for j in jobs] == ["/r/.work/slurm-output"] * len(rows)


def test_odd_bytes_from_squeue_never_raise():
    rng = random.Random(5)
    markers = slurm.new_markers()
    good = squeue_output(markers.format, ROWS)
    for _ in range(200):
        data = bytearray(good.encode())
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        jobs, junk = slurm.parse_squeue(data.decode("utf-8", "replace"), markers, NOW)
        assert len(jobs) + len(junk) >= 1
        assert all(re.match(r"^[0-9]+$", j.job_id, re.ASCII) for j in jobs)


def test_submitted_from():
    job = slurm.Job("1", "R", "svc", "n", 1, 1, "None", "", workdir="/r/.work/slurm-output/")
    assert slurm.submitted_from(job, {"/r/.work/slurm-output"})
    assert not slurm.submitted_from(job._replace(workdir="/other"), {"/r/.work/slurm-output"})
    assert not slurm.submitted_from(job._replace(workdir=""), {""})


def test_rows_seen_before_come_from_the_cache_and_the_cache_holds_only_the_last_observation():
    cache = {}
    first, _ = parse(ROWS, cache=cache)
    assert len(cache) == 5
    second, _ = parse(ROWS[:2], cache=cache)
    assert second == first[:2] and len(cache) == 2


@pytest.mark.parametrize("text,epoch", [
    (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW)), NOW), ("N/A", None), ("NONE", None),
    ("Unknown", None), ("2026-13-45T99:99:99", None), ("\u0662026-01-01T00:00:00", None), ("", None),
])
def test_parse_time(text, epoch):
    assert slurm.parse_time(text) == epoch


@pytest.mark.parametrize("script,name,line", [
    ('#!/bin/bash\n#SBATCH --job-name "hello-python"\n', "hello-python", 2),
    ("#!/bin/bash\n#SBATCH --time 1:00\n#SBATCH --job-name=svc  # comment\n", "svc", 3),
    ("#!/bin/bash\n#SBATCH -J svc\n", "svc", 2),
    ("#!/bin/bash\n## #SBATCH --job-name off\n#SBATCH --mem 1\n", None, None),
    ("#!/bin/bash\necho hi\n#SBATCH --job-name late\n", None, None),   # sbatch stops at the first command
    ("#!/bin/bash\n#SBATCH --job-name web\n#SBATCH --job-name web-test\n", "web-test", 3),   # the last one wins
    ("#!/bin/bash\n#SBATCH -Jweb\n", "web", 2),
    ("#!/bin/bash\n# a form feed \f here\n#SBATCH -J web\n", "web", 3),     # lines end at \n only
])
def test_script_job_name(script, name, line):
    assert sbatch_script.script_job_name(script) == (name, line)


class FakeRun:
    def __init__(self, stdout="", returncode=0, stderr="", rows=None):
        self.calls = []
        self.stdout, self.returncode, self.stderr, self.rows = stdout, returncode, stderr, rows

    def __call__(self, argv, timeout=None, env=None, cwd=None):
        self.calls.append((argv, env))
        if self.returncode:
            raise CommandError(argv, self.returncode, self.stderr)

        class Done:
            pass
        done = Done()
        done.stdout = squeue_output(argv[-1], self.rows) if self.rows is not None else self.stdout
        done.stderr, done.returncode = self.stderr, 0
        return done


def test_observe_is_one_squeue_with_a_clean_environment_and_fresh_markers():
    run = FakeRun(rows=ROWS)
    cluster = slurm.Slurm(run=run, environ={"SLURM_TIME_FORMAT": "standard"})
    assert len(cluster.observe()) == 5 and len(cluster.observe()) == 5 and len(run.calls) == 2
    formats = [argv[-1] for argv, env in run.calls]
    assert run.calls[0][0][:-1] == ["squeue", "--me", "-h", "-t", "all", "-o"]
    assert formats[0] != formats[1] and all("%k" in f and "%Z" in f for f in formats)


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
                          output="%x-%j.out", extra_env={"FOREVER_ROOT": "/r"}, job_name="svc") == "4242"
    argv, env = run.calls[0]
    assert argv == ["sbatch", "--parsable", "--chdir=/r/.work/slurm-output", "--job-name=svc",
                    "--exclude=node1,node2", "--output=%x-%j.out", "/r/.work/s.sub"]
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


def test_an_answer_with_no_readable_row_is_no_answer_but_an_empty_queue_is_one():
    """Exit 0 with only an error message on stdout (a site's wrapper) must not read as 'all our jobs are gone'."""
    run = FakeRun(stdout="squeue: error: slurm_receive_msg: Socket timed out on send/recv operation\n")
    with pytest.raises(CommandError, match="no row we can read.*Socket timed out"):
        slurm.Slurm(run=run, environ={}).observe()
    assert slurm.Slurm(run=FakeRun(stdout=""), environ={}).observe() == []


def test_a_banner_before_the_rows_is_skipped_and_the_rows_are_read():
    class Banner(FakeRun):
        def __call__(self, argv, timeout=None, env=None, cwd=None):
            done = super().__call__(argv, timeout, env, cwd)
            done.stdout = "Welcome to the cluster\n" + done.stdout
            return done
    assert [j.job_id for j in slurm.Slurm(run=Banner(rows=ROWS), environ={}).observe()] == [r[0] for r in ROWS]
