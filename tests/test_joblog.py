"""observe/joblog: which output file belongs to a job, its tail, and what `logs` prints."""

import os

import pytest

from forever_slurm.common import settings
from forever_slurm.common.errors import ForeverError
from forever_slurm.core import model, state
from forever_slurm.observe import joblog
from forever_slurm.systems import slurm_output


@pytest.fixture
def layout(tmp_path):
    result = settings.Layout(str(tmp_path))
    os.makedirs(result.slurm_output)
    return result


def output(layout, name, text="", mtime=None):
    path = os.path.join(layout.slurm_output, name)
    with open(path, "w") as handle:
        handle.write(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_output_file_prefers_our_name_then_slurms_default_then_any_file_naming_the_job(layout):
    assert slurm_output.output_file(layout, "41", "svc") is None
    old = output(layout, "custom-41-a.log", mtime=100)
    new = output(layout, "custom-41-b.log", mtime=200)
    assert slurm_output.output_file(layout, "41", "svc") == new, "the newest file naming the job"
    os.utime(old, (300, 300))
    assert slurm_output.output_file(layout, "41") == old
    default = output(layout, "slurm-41.out")
    assert slurm_output.output_file(layout, "41", "svc") == default
    ours = output(layout, "svc-41.out")
    assert slurm_output.output_file(layout, "41", "svc") == ours
    assert slurm_output.output_file(layout, "41") == default, "without the service, our name is unknown"


def test_tail_reads_the_last_lines_from_the_end_only(layout):
    path = output(layout, "svc-1.out", "".join("line %d\n" % n for n in range(1000)))
    assert slurm_output.tail(path, 3) == ["line 997", "line 998", "line 999"]
    assert slurm_output.tail(path, 0, max_bytes=20) == ["7", "line 998", "line 999"]     # a cut first line
    assert slurm_output.tail(os.path.join(layout.slurm_output, "missing"), 5) == []


def test_tail_survives_bytes_that_are_not_utf8(layout):
    path = os.path.join(layout.slurm_output, "bin.out")
    with open(path, "wb") as handle:
        handle.write(b"ok\n\xff\xfe broken\n")
    assert slurm_output.tail(path, 5) == ["ok", "\ufffd\ufffd broken"]


def test_targets_for_every_service_are_the_newest_job_of_each(layout):
    memory = model.Memory({"5": model.JobMemory("a"), "30": model.JobMemory("a"),
                               "9": model.JobMemory("b")}, {})
    snap = state.empty_snapshot()._replace(memory=memory, desired={"a": 1, "c": 1})
    output(layout, "c-77.out")
    assert joblog.targets(layout, snap) == [("30", "a"), ("9", "b"), ("77", "c")]
    assert joblog.targets(layout, snap, "b") == [("9", "b")]
    assert joblog.targets(layout, snap, "30") == [("30", "a")]


def test_show_prints_a_heading_and_the_tail_of_each_target(layout):
    state.save(layout.state_file, state.empty_snapshot()._replace(
        memory=model.Memory({"8": model.JobMemory("svc"), "9": model.JobMemory("gone")}, {})))
    output(layout, "svc-8.out", "starting\nserving on :8080\n")
    printed = []
    assert joblog.show(layout, None, 1, printed.append) == 0
    assert printed == ["== job 9 (gone): no output file",
                       "== job 8 (svc): %s" % os.path.join(layout.slurm_output, "svc-8.out"), "serving on :8080"]


def test_show_without_any_job_says_where_it_looked(layout):
    with pytest.raises(ForeverError, match="no job output found under %s" % layout.slurm_output):
        joblog.show(layout, None, 5, print)


def test_a_job_with_no_output_that_the_loop_does_not_know_is_an_error(layout):
    """`logs 99999` had printed "no output file" and exited 0."""
    with pytest.raises(ForeverError, match=r"job 99999: no output file under .*it is not a job the loop knows"):
        joblog.show(layout, "99999", out=lambda line: None)


def test_a_known_job_without_output_yet_is_an_error_too(layout):
    memory = model.Memory({"12": model.JobMemory("svc", seen_at=1)}, {})
    state.save(layout.state_file, state.empty_snapshot()._replace(memory=memory))
    with pytest.raises(ForeverError, match=r"no output file yet .* for job\(s\) 12"):
        joblog.show(layout, "svc", out=lambda line: None)
