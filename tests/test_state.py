"""core/state: state.json round-trips, and a damaged file costs memory, never the loop or a write."""

import json
import os

import pytest

from forever_slurm.common import fsutil
from forever_slurm.core import model, planner, state
from forever_slurm.systems import traefik
from forever_slurm.systems.slurm import Job


def snapshot():
    memory = model.Memory({"7": model.JobMemory("svc", submitted_at=10.0, url="http://n1:80",
                                                         excluded=("n3",))},
                              {"svc": model.ServiceMemory(failures=2, next_try=99.5, startup=(30.0,))})
    return state.empty_snapshot()._replace(
        memory=memory, jobs=[Job("7", "R", "svc", "n1", 3600, 60, "None", "traefik,svc,http://n1:80")],
        observed_at=100.0, slurm_ok=True, slurm_since=50.0, routes={"svc": [traefik.Server("http://n1:80", 1)]},
        desired={"svc": 1}, service_errors={"other": "no .sub"}, updated_at=101.0, pid=1234,
        foreign=[Job("8", "PD", "svc", "", None, 0, "Priority", "")], faults={"disk": "full"})


def test_save_then_read_gives_the_same_snapshot(tmp_path):
    path = str(tmp_path / "state.json")
    state.save(path, snapshot())
    assert state.read(path) == (snapshot(), "")
    assert state.load(path) == snapshot()


def test_no_file_yet_is_an_empty_snapshot_without_a_problem(tmp_path):
    assert state.read(str(tmp_path / "state.json")) == (state.empty_snapshot(), "")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\"text\""])
def test_an_unreadable_file_reads_as_empty_with_the_reason_and_stays_as_it_was(tmp_path, text):
    path = tmp_path / "state.json"
    path.write_text(text)
    snap, problem = state.read(str(path))
    assert snap == state.empty_snapshot()
    assert problem.startswith("%s: cannot be read" % path)
    assert path.read_text() == text, "reading changes nothing"


def test_records_of_the_wrong_shape_are_dropped_one_by_one():
    data = json.loads(state.to_json(snapshot()))
    data["jobs"]["8"] = {"service": 5}                      # wrong type
    data["jobs"]["9"] = {"submitted_at": 1.0}               # no service
    data["jobs"]["10"] = {"service": "svc", "ready_since": float("nan")}
    data["jobs"]["11"] = {"service": "svc", "a_future_field": 1}
    data["observed"].append({"job_id": "12"})               # no state, no name
    data["routes"]["svc"].append({"weight": 1})             # no url
    data["pid"] = True
    data["observed_at"] = "soon"
    snap = state.from_json(json.dumps(data))
    assert sorted(snap.memory.jobs) == ["11", "7"]
    assert snap.memory.jobs["11"] == model.JobMemory("svc")
    assert [j.job_id for j in snap.jobs] == ["7"]
    assert snap.routes == {"svc": [traefik.Server("http://n1:80", 1)]}
    assert (snap.pid, snap.observed_at) == (None, None)
    assert snap.memory.jobs["7"].excluded == ("n3",), "lists come back as tuples"


def test_list_items_and_numbers_are_checked_too():
    """A string in a service's start-up times made every plan raise, for every service (renew_lead)."""
    data = json.loads(state.to_json(snapshot()))
    data["services"] = {"a": {"startup": ["slow"]}, "b": {"drains": [1e400]}, "c": {"next_try": 1e400},
                        "d": {"startup": [True]}, "e": {"startup": [12.5, 3]}}
    data["jobs"]["8"] = {"service": "svc", "excluded": [1]}
    data["jobs"]["9"] = {"service": "svc", "drain_since": -1e400}
    data["desired"] = {"svc": True, "other": 2}
    text = json.dumps(data)
    assert "Infinity" in text
    snap = state.from_json(text)
    assert snap.memory.services == {"e": model.ServiceMemory(startup=(12.5, 3))}
    assert sorted(snap.memory.jobs) == ["7"]
    assert snap.desired == {"other": 2}
    plan = planner.plan({"e": 1, "svc": 1}, [], snap.memory, 1000.0, model.Policy())
    assert not plan.failed and [a.service for a in plan.actions] == ["e"]   # svc has job 7


def test_a_state_file_nested_too_deeply_is_unreadable_not_a_crash(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("[" * 100000 + "]" * 100000)
    snap, problem = state.read(str(path))
    assert snap == state.empty_snapshot() and "nested too deeply" in problem


def test_from_json_refuses_what_is_not_an_object():
    with pytest.raises(ValueError):
        state.from_json("[]")


def test_set_aside_keeps_the_damaged_file_under_a_dated_name(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{broken")
    expected = fsutil.backup_name(str(path), now=1234.9)
    aside = state.set_aside(str(path), now=1234.9)
    assert aside == expected
    assert not path.exists() and open(aside).read() == "{broken"
    assert state.set_aside(str(path), now=1) is None, "nothing to set aside"


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "state.json")
    state.save(path, snapshot())
    state.save(path, state.empty_snapshot())
    assert os.listdir(str(tmp_path)) == ["state.json"]
    assert state.load(path) == state.empty_snapshot()
