"""systems/slurm_facts: what a shared cluster says beside the queue, parsed from the texts measured on
Slurm 22.05 (docs/shared-cluster-observed.md); and core/maintenance: jobs that end before a window."""

import time

import pytest

from forever_slurm.common import sbatch_script
from forever_slurm.core import maintenance
from forever_slurm.systems import slurm_facts

MEASURED = ("ReservationName=maint1 StartTime=2026-12-07T05:12:17 EndTime=2026-12-07T05:32:17 Duration=00:20:00 "
            "Nodes=node[1-3] NodeCnt=3 CoreCnt=12 Features=(null) PartitionName=(null) "
            "Flags=MAINT,IGNORE_JOBS,SPEC_NODES,ALL_NODES TRES=cpu=12 Users=root Groups=(null) Accounts=(null) "
            "Licenses=(null) State=INACTIVE BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)")


@pytest.mark.parametrize("text, names", [
    ("node[1-3]", ["node1", "node2", "node3"]),
    ("node[1-3,5],gpu[01-02],login", ["node1", "node2", "node3", "node5", "gpu01", "gpu02", "login"]),
    ("a[1-2]b[7-8]", ["a1b7", "a1b8", "a2b7", "a2b8"]),
    ("gpu_node01", ["gpu_node01"]),
    ("", []), ("(null)", []),
    ("odd[x-y]", ["odd[x-y]"]),             # not a range: kept as it is, never a crash
])
def test_host_lists_expand_as_slurm_writes_them(text, names):
    assert slurm_facts.expand_hostlist(text) == names


def test_the_measured_reservation_line_reads_back():
    [found] = slurm_facts.parse_reservations(MEASURED + "\n")
    assert found.name == "maint1" and found.maintenance and found.state == "INACTIVE"
    assert found.nodes == ("node1", "node2", "node3") and found.covers(["node9"])      # ALL_NODES
    assert found.end - found.start == 20 * 60
    assert slurm_facts.parse_reservations("No reservations in the system\n") == []


def test_a_value_with_spaces_runs_to_the_next_key():
    fields = slurm_facts.parse_key_values("ReservationName=r Comment=two words here State=ACTIVE")
    assert fields == {"ReservationName": "r", "Comment": "two words here", "State": "ACTIVE"}


def test_nodes_with_a_reason_and_a_reason_that_holds_the_separators():
    row, field, end = "<r1>", "<f1>", "<e1>"
    text = ("banner\n" + row + field.join(("node[2-3]", "drng", "reboot | soon <f")) + end + "\n"
            + row + field.join(("node4", "idle", "stale reason")) + end + "\n"
            + row + field.join(("node5", "down*", "not responding")) + end + "\n")
    found = slurm_facts.parse_node_problems(text, row, field, end)
    assert sorted(found) == ["node2", "node3", "node5"]
    assert found["node2"].reason == "reboot | soon <f" and found["node5"].state == "down"


@pytest.mark.parametrize("stderr, options, lasting", [
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)",
     ("--time", "-t"), True),
    ("sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid "
     "partition name specified", ("--partition", "-p"), True),
    ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's "
     "size and/or time limits)", ("--qos", "-q", "--account", "-A", "--time", "-t"), True),
    ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying", (), False),
])
def test_a_refused_submission_names_the_options_to_change(stderr, options, lasting):
    limit = slurm_facts.rejection(stderr)
    assert limit.options == options and limit.lasting is lasting
    assert slurm_facts.rejection("squeue: error: Unable to contact slurm controller") is None


def test_pending_reasons_that_waiting_will_not_cure():
    assert slurm_facts.lasting_pending_reason("PartitionTimeLimit").options == ("--time", "-t")
    assert slurm_facts.lasting_pending_reason("QOSMaxJobsPerUserLimit").options == ("--qos", "-q")
    assert slurm_facts.lasting_pending_reason("Priority") is None
    assert slurm_facts.lasting_pending_reason("ReqNodeNotAvail, Reserved for maintenance") is None
    gone = "ReqNodeNotAvail, UnavailableNodes:node[2-3]"
    assert slurm_facts.lasting_pending_reason(gone, {"node2": "down"}) is None      # node3 may come
    assert slurm_facts.lasting_pending_reason(gone, {"node2": "down", "node3": "drain"}) is not None


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("1:30", 90), ("2:00:00", 7200), ("1-12", 129600),
                                           ("1-0:30", 86400 + 1800), ("UNLIMITED", None), ("", None),
                                           ("1-x", None), ("1:2:3:4", None)])
def test_time_limits_as_sbatch_reads_them(text, seconds):
    assert sbatch_script.time_limit_seconds(text) == seconds


def reservation(start, minutes=30, flags=("MAINT",), nodes=("node1",)):
    return slurm_facts.Reservation("m", start, start + minutes * 60, nodes, frozenset(flags), "INACTIVE")


def test_a_job_that_would_cross_a_maintenance_asks_only_the_time_left():
    now = 1000.0
    coming = [reservation(now + 900)]
    window = maintenance.window(now, coming, {"node1"}, 1800, 140)
    assert window.time_limit == 900 - maintenance.MARGIN and "m at" in window.note
    assert maintenance.window(now, coming, {"node1"}, 600, 140).time_limit is None        # ends before it
    assert maintenance.window(now, coming, {"node9"}, 1800, 140) == maintenance.Window(None, "")   # not ours
    assert maintenance.window(now, [reservation(now + 170)], {"node1"}, 1800, 140).time_limit is None  # too close
    # A job that serves at least as long as its start takes is worth it: the service runs up to the margin.
    assert maintenance.window(now, [reservation(now + 260)], {"node1"}, 1800, 140).time_limit == 200
    assert maintenance.window(now, [reservation(now + 260)], {"node1"}, 1800, 240).time_limit is None
    during = maintenance.window(now, [reservation(now - 60)], {"node1"}, 1800, 140)
    assert during.time_limit is None and "wait for its end" in during.note
    assert maintenance.window(now, [reservation(now + 900, flags=())], {"node1"}, 1800, 140).note == ""


def test_times_are_local_like_squeues():
    stamp = time.strftime(slurm_facts.TIME_FORMAT, time.localtime(1796620337))
    assert slurm_facts.parse_time(stamp) == 1796620337
