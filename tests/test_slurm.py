"""slurm.py: parsers over captured squeue output and sbatch scripts; argv building."""

import os
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


TITLES = ("JOBID", "ST", "NAME", "NODELIST", "START_TIME", "END_TIME", "REASON", "WORK_DIR", "COMMENT")


def squeue_output(fmt, rows, header=False):
    """What squeue prints for `-o fmt`: each %X replaced by the row's field, one line per row, after
    the header (each %X replaced by its title) unless -h."""
    codes = [code[1] for code in slurm.FIELD_CODES]

    def one(row):
        fields = dict(zip(codes, row))
        return re.sub(r"%([A-Za-z])", lambda m: fields.get(m.group(1), ""), fmt)
    return "".join(one(row) + "\n" for row in ([TITLES] if header else []) + list(rows))


def parse(rows, markers=None, cache=None):
    markers = markers or slurm.new_markers()
    return slurm.parse_squeue(squeue_output(markers.format, rows), markers, NOW, cache)


def test_parse_rows():
    listing = parse(ROWS)
    jobs = listing.jobs
    assert listing.unreadable == [] and listing.outside == "" and not listing.header
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


def test_text_that_is_not_a_row_is_set_aside_not_a_job():
    markers = slurm.new_markers()
    text = "slurm_load_jobs error: Unable to contact slurm controller\n" + squeue_output(markers.format, ROWS[:1])
    text += markers.row + "notanid" + markers.field * 8 + markers.end + "\n"      # framed, but not a row
    text += markers.row + "4999" + markers.field * 3 + "\n"                        # cut short: no end
    listing = slurm.parse_squeue(text, markers, NOW)
    assert [j.job_id for j in listing.jobs] == ["4101"] and len(listing.unreadable) == 2
    assert listing.outside == "slurm_load_jobs error: Unable to contact slurm controller"


def row_shaped(rng):
    """A string that looks like one or more squeue rows, in any format this module ever used."""
    other = slurm.new_markers()
    pieces = ["9%03d|R|hello-python|node9|1:00:00|0:01|None|traefik,hello-python,http://evil:%d" % (
        rng.randrange(1000), rng.randrange(1, 65536)),
        other.row + other.field.join(["9999", "R", "hello-python", "node9", "1:00:00", "0:01", "None",
                                      "/r/.work/slurm-output", "traefik,hello-python,http://evil:1"]) + other.end]
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
        listing = parse(rows)
        jobs = listing.jobs
        assert listing.unreadable == [] and listing.outside == ""
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
        listing = slurm.parse_squeue(data.decode("utf-8", "surrogateescape"), markers, NOW)
        assert len(listing.jobs) + len(listing.unreadable) + bool(listing.outside) >= 1
        assert all(re.match(r"^[0-9]+$", j.job_id, re.ASCII) for j in listing.jobs)
        for job in listing.jobs:            # only the workdir keeps bytes that are not UTF-8
            for field in job[:4] + job[6:8]:
                field.encode("utf-8")       # raises on a surrogate


def test_submitted_from():
    job = slurm.Job("1", "R", "svc", "n", 1, 1, "None", "", workdir="/r/.work/slurm-output/")
    assert slurm.submitted_from(job, {"/r/.work/slurm-output"})
    assert not slurm.submitted_from(job._replace(workdir="/other"), {"/r/.work/slurm-output"})
    assert not slurm.submitted_from(job._replace(workdir=""), {""})


def test_rows_seen_before_come_from_the_cache_and_the_cache_holds_only_the_last_observation():
    cache = {}
    first = parse(ROWS, cache=cache).jobs
    assert len(cache) == 5
    second = parse(ROWS[:2], cache=cache).jobs
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
    def __init__(self, stdout="", returncode=0, stderr="", rows=None, header=True):
        self.calls = []
        self.stdout, self.returncode, self.stderr, self.rows, self.header = stdout, returncode, stderr, rows, header

    def __call__(self, argv, timeout=None, env=None, cwd=None, errors="replace"):
        self.calls.append((argv, env))
        if self.returncode:
            raise CommandError(argv, self.returncode, self.stderr)

        class Done:
            pass
        done = Done()
        done.stdout = squeue_output(argv[-1], self.rows, self.header) if self.rows is not None else self.stdout
        done.stderr, done.returncode = self.stderr, 0
        return done


def test_observe_is_one_squeue_with_a_clean_environment_and_fresh_markers():
    run = FakeRun(rows=ROWS)
    cluster = slurm.Slurm(run=run, environ={"SLURM_TIME_FORMAT": "standard"})
    assert len(cluster.observe()) == 5 and len(cluster.observe()) == 5 and len(run.calls) == 2
    formats = [argv[-1] for argv, env in run.calls]
    assert run.calls[0][0][:-1] == ["squeue", "--me", "-t", "all", "-o"]
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


def test_an_answer_with_no_row_and_no_header_is_no_answer_but_an_empty_queue_is_one():
    """Exit 0 with only an error message on stdout (a site's wrapper), or nothing at all, must not read
    as 'all our jobs are gone'; squeue's header alone is an empty queue."""
    run = FakeRun(stdout="squeue: error: slurm_receive_msg: Socket timed out on send/recv operation\n")
    with pytest.raises(CommandError, match="no row we can read and not its header.*Socket timed out"):
        slurm.Slurm(run=run, environ={}).observe()
    with pytest.raises(CommandError, match="not its header"):
        slurm.Slurm(run=FakeRun(stdout=""), environ={}).observe()
    assert slurm.Slurm(run=FakeRun(rows=[]), environ={}).observe() == []


def test_a_banner_before_the_rows_is_skipped_and_the_rows_are_read():
    class Banner(FakeRun):
        def __call__(self, argv, timeout=None, env=None, cwd=None, errors="replace"):
            done = super().__call__(argv, timeout, env, cwd)
            done.stdout = "Welcome to the cluster\n" + done.stdout
            return done
    assert [j.job_id for j in slurm.Slurm(run=Banner(rows=ROWS), environ={}).observe()] == [r[0] for r in ROWS]


# -- issue 21: text around the rows, duplicated rows, old Slurm, chatty sbatch, bytes in paths ---------
class Wrapped(FakeRun):
    """squeue behind a site's wrapper: `before` and `after` printed around its real output."""

    def __init__(self, rows, before="", after="", header=True):
        super().__init__(rows=rows, header=header)
        self.before, self.after = before, after

    def __call__(self, argv, timeout=None, env=None, cwd=None, errors="replace"):
        done = super().__call__(argv, timeout, env, cwd)
        done.stdout = self.before + done.stdout + self.after
        return done


def test_a_footer_after_the_last_row_is_set_aside_not_glued_to_its_comment(caplog):
    for after in ["-- end of listing --\n", "notice: maintenance on Sunday", "\x1e(3 jobs)\n\n"]:
        cluster = slurm.Slurm(run=Wrapped(ROWS, after=after), environ={})
        jobs = cluster.observe()
        assert [(j.job_id, j.comment) for j in jobs] == [(r[0], "" if r[8] == "(null)" else r[8]) for r in ROWS]
    assert "not a row (set aside" in caplog.text


def test_a_banner_with_an_empty_queue_is_an_empty_queue_and_is_said_once(caplog):
    cluster = slurm.Slurm(run=Wrapped([], before="*** Welcome to the cluster ***\n", after="bye\n"), environ={})
    with caplog.at_level("DEBUG"):
        assert cluster.observe() == [] and cluster.observe() == []
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "Welcome to the cluster" in warnings[0].getMessage()


def test_text_around_no_header_is_still_no_answer():
    """A wrapper that prints its own error (exit 0) and no squeue output at all."""
    cluster = slurm.Slurm(run=Wrapped([], before="squeue wrapper: quota service down\n", header=False), environ={})
    with pytest.raises(CommandError, match="quota service down"):
        cluster.observe()


def test_a_job_listed_twice_is_one_job(caplog):
    rows = ROWS[:2] + [ROWS[0]] + ROWS[2:] + [ROWS[1][:3] + ("node9",) + ROWS[1][4:]]
    cluster = slurm.Slurm(run=FakeRun(rows=rows), environ={})
    jobs = cluster.observe()
    assert [j.job_id for j in jobs] == [r[0] for r in ROWS]
    cluster.observe()
    assert caplog.text.count("listed job 4101 more than once") == 1


GETOPT_NO_ME = "squeue: unrecognized option '--me'\nTry \"squeue --help\" for more information\n"


class OldSqueue(FakeRun):
    """Slurm < 20.11: no --me; -u <uid> works."""

    def __call__(self, argv, timeout=None, env=None, cwd=None, errors="replace"):
        if "--me" in argv:
            self.calls.append((argv, env))
            raise CommandError(argv, 1, GETOPT_NO_ME)
        return super().__call__(argv, timeout, env, cwd)


def test_squeue_without_me_is_found_once_and_asked_with_the_uid_saying_why(caplog):
    run = OldSqueue(rows=ROWS)
    cluster = slurm.Slurm(run=run, environ={}, uid=1234)
    assert len(cluster.observe()) == 5 and len(cluster.observe()) == 5
    argvs = [argv[:-1] for argv, _ in run.calls]
    assert argvs == [["squeue", "--me", "-t", "all", "-o"]] + [["squeue", "-u", "1234", "-t", "all", "-o"]] * 2
    assert caplog.text.count("no --me here") == 1 and "unrecognized option '--me'" in caplog.text


def test_check_squeue_reports_old_slurm_and_a_squeue_that_fails():
    assert slurm.check_squeue(run=FakeRun(rows=ROWS)) == slurm.SqueueCheck(True, "")
    old = slurm.check_squeue(run=OldSqueue(rows=[]))
    assert old.ok and "no --me" in old.line and "unrecognized option '--me'" in old.line and "-u %d" % os.getuid() in old.line
    down = slurm.check_squeue(run=FakeRun(returncode=1, stderr="slurm_load_jobs error: Unable to contact slurm controller\n"))
    assert not down.ok and "Unable to contact slurm controller" in down.line


def test_a_failure_keeps_the_line_that_explains_not_the_hint_after_it():
    assert str(CommandError(["squeue"], 1, GETOPT_NO_ME)) == "squeue exited 1: squeue: unrecognized option '--me'"
    assert str(CommandError(["x"], 2, "Usage: x [options]\n")) == "x exited 2: Usage: x [options]"
    assert str(CommandError(["x"], 2, "")) == "x exited 2: no error output"


@pytest.mark.parametrize("stdout, job_id", [
    ("4242\n", "4242"),
    ("4242;cluster\n", "4242"),
    ("Accounting: this job will be charged to project p123\n4242\n", "4242"),
    ("NOTICE: 80% of your quota used\n4242;cluster\nHave a nice day\n", "4242"),
    ("sbatch: your allocation expires in 3 days\nSubmitted batch job 77\n", "77"),
    ("Submitted batch job 78 on cluster c1\n", "78"),
    ("sbatch: warning only\n", None),
    ("", None),
    ("4242 jobs are ahead of yours\n", None),
])
def test_the_job_id_is_found_among_what_sbatch_prints(stdout, job_id):
    assert slurm.sbatch_job_id(stdout) == job_id
    cluster = slurm.Slurm(run=FakeRun(stdout=stdout), environ={})
    if job_id:
        assert cluster.submit("s.sub", "/tmp") == job_id
    else:
        with pytest.raises(CommandError, match="no job id"):
            cluster.submit("s.sub", "/tmp")


@pytest.mark.parametrize("raw", [b"/tmp/j\xc3\xb6rg", b"/tmp/j\xf6rg", b"/tmp/\xff\xfe/x y"])
def test_a_root_path_that_is_not_utf8_or_read_under_an_ascii_locale_still_marks_our_jobs(raw):
    """The workdir squeue prints is compared with ours as bytes, whatever the locale decoded."""
    workdir = raw + b"/.work/slurm-output"
    row = ("4101", "R", "svc", "node1", at(-29), at(600), "None", "WORKDIR", "traefik,svc,http://n:1 BAD")
    markers = slurm.new_markers()
    text = squeue_output(markers.format, [row], header=True).encode("utf-8", "surrogateescape")
    text = text.replace(b"WORKDIR", workdir).replace(b"BAD", b"\xff")
    job = slurm.parse_squeue(text.decode("utf-8", "surrogateescape"), markers, NOW).jobs[0]
    ascii_locale_path = workdir.decode("ascii", "surrogateescape")     # what Python 3.6 under LC_ALL=C holds
    assert slurm.submitted_from(job, {os.fsdecode(workdir)})
    assert slurm.submitted_from(job, {ascii_locale_path})
    assert slurm.submitted_from(job._replace(workdir=job.workdir + "/"), {os.fsdecode(workdir)})
    assert not slurm.submitted_from(job, {os.fsdecode(raw + b"/other")})
    assert job.comment == "traefik,svc,http://n:1 \ufffd"      # every other field: text, never bytes
