"""observe/checks: `check` reports every problem of .env and the wanted services with its file and line,
and changes nothing."""

import os

import pytest

from forever_slurm.common import settings
from forever_slurm.observe import checks
from forever_slurm.systems import slurm, traefik_binary

SUB = "#!/bin/bash\n#SBATCH --job-name %s\nexec true\n"


@pytest.fixture
def layout(tmp_path, monkeypatch):
    # No Traefik is asked its version: render for what every Traefik v3 understands.
    monkeypatch.setattr(traefik_binary, "version_in_use", lambda *args, **kwargs: None)
    monkeypatch.setattr(slurm, "check_squeue", lambda: slurm.SqueueCheck(True, ""))    # squeue answers as expected
    return settings.Layout(str(tmp_path))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def tree(root):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def test_a_root_without_env_is_a_problem_not_all_good(layout):
    report = checks.check_root(layout)
    assert report.summary == "1 problem(s) found"
    assert report.problems[0].startswith("%s: missing: " % layout.env_file) and "run `config`" in report.problems[0]


def test_an_empty_env_is_all_good_with_nothing_to_run(layout):
    write(layout.env_file, "# nothing yet\n")
    report = checks.check_root(layout)
    assert report == checks.CheckReport([], [], "all good (SERVICE_LIST is empty)")


def test_each_usable_service_gets_an_ok_line(layout):
    write(layout.env_file, 'SERVICE_LIST="web/2 hello-python/0-3"\n')
    write(os.path.join(layout.services, "web", "web.sub"), SUB % "web")
    report = checks.check_root(layout)
    assert report.problems == [] and report.summary == "all good"
    assert report.ok == ["ok: web/2 (services/web/web.sub, default Traefik route)",
                         "ok: hello-python/0-3 (bundled; the loop unpacks it into services/hello-python/ on its "
                         "first look)"]


def test_every_problem_is_listed_with_its_file_and_line_and_nothing_is_written(layout):
    """All at once: a $(...) on line 4 had hidden the bad values on lines 2 and 3, and bad settings
    the services; a typo'd key had gone unmentioned."""
    write(layout.env_file, '# settings\nFS_SURGE=lots\nFS_SPREAD=maybe\nX=$(id)\nSERVICE_LIST="web/1 gone/1"\n'
                           'FS_SLEEP_INTERVALL=5\n')
    write(os.path.join(layout.services, "web", "web.sub"), SUB % "other")
    before = tree(layout.root)
    report = checks.check_root(layout)
    assert report.summary == "6 problem(s) found", report.problems
    assert report.problems[0].startswith("%s:2: FS_SURGE" % layout.env_file)
    assert report.problems[1].startswith("%s:3: FS_SPREAD" % layout.env_file)
    assert report.problems[2].startswith("%s:4: command substitution" % layout.env_file)
    assert report.problems[3] == ("%s:6: FS_SLEEP_INTERVALL is not a forever-slurm setting, so it changes "
                                  "nothing; did you mean FS_SLEEP_INTERVAL?" % layout.env_file)
    assert report.problems[4].startswith(os.path.join(layout.services, "web", "web.sub") + ":2: ")
    assert report.problems[5].startswith("%s:5: unknown service 'gone' in SERVICE_LIST" % layout.env_file)
    assert tree(layout.root) == before


def test_keys_of_the_roots_own_env_default_and_other_prefixes_are_not_unknown(layout):
    write(layout.env_default, "FS_MY_OWN=1\n")
    write(layout.env_file, "FS_MY_OWN=2\nLLAMA_MODEL=/m.gguf\nFS_TYPO=1\n")
    report = checks.check_root(layout)
    assert report.problems == ["%s:3: FS_TYPO is not a forever-slurm setting, so it changes nothing"
                               % layout.env_file]


def test_with_good_settings_each_broken_service_is_a_problem(layout):
    write(layout.env_file, 'SERVICE_LIST="web/1 gone/1 yml/1"\n')
    write(os.path.join(layout.services, "web", "web.sub"), SUB % "other")
    write(os.path.join(layout.services, "yml", "yml.sub"), SUB % "yml")
    write(os.path.join(layout.services, "yml", "yml.yml"), "http:\n  routers: [\n")
    report = checks.check_root(layout)
    assert report.ok == [] and report.summary == "3 problem(s) found"
    assert report.problems[0].startswith(os.path.join(layout.services, "web", "web.sub") + ":2: ")
    assert report.problems[1].startswith("%s:1: unknown service 'gone' in SERVICE_LIST" % layout.env_file)
    assert report.problems[2].startswith(os.path.join(layout.services, "yml", "yml.yml"))


def test_squeue_without_me_or_not_answering_is_reported(layout):
    write(layout.env_file, 'SERVICE_LIST="web/1"\n')
    write(os.path.join(layout.services, "web", "web.sub"), SUB % "web")
    old = checks.check_root(layout, lambda: slurm.SqueueCheck(True, "ok: squeue here has no --me (...)"))
    assert old.ok[-1] == "ok: squeue here has no --me (...)" and old.summary == "all good"
    down = checks.check_root(layout, lambda: slurm.SqueueCheck(False, "squeue: exited 1: down"))
    assert down.problems == ["squeue: exited 1: down"] and down.summary == "1 problem(s) found"
