"""The shared-cluster harness's pure parts: what it writes into slurm.conf and how it reads Slurm's output."""

from harness.shared_cluster import (NodeRow, SharedCluster, parse_loop_rows, parse_reservations,
                                    parse_scontrol_line, parse_time)
from harness.shared_scenarios import below_wanted
from harness.slurm_cluster import LocalCluster

PORTS = {"ctld": 16817, "slurmd": 16818, "nodes": [17001, 17002, 17003]}

# `scontrol -o show reservation` on Slurm 22.05.8 (SLURM_TIME_FORMAT=standard).
RESERVATION = ("ReservationName=maint1 StartTime=2026-12-07T05:12:17 EndTime=2026-12-07T05:32:17 Duration=00:20:00 "
               "Nodes=node[1-3] NodeCnt=3 CoreCnt=12 Features=(null) PartitionName=(null) "
               "Flags=MAINT,IGNORE_JOBS,SPEC_NODES,ALL_NODES TRES=cpu=12 Users=root Groups=(null) Accounts=(null) "
               "Licenses=(null) State=INACTIVE BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)")


def test_the_plain_cluster_config_has_no_shared_settings(tmp_path):
    text = LocalCluster(str(tmp_path)).render(PORTS, None)
    assert "Preempt" not in text and "EnforcePartLimits" not in text
    assert "ReturnToService=2" in text and "SchedulerParameters=sched_interval=1\n" in text
    assert [line for line in text.splitlines() if line.startswith("PartitionName=")] == [
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"]


def test_the_shared_cluster_config_has_preemption_and_four_partitions(tmp_path):
    text = SharedCluster(str(tmp_path), grace_time=45, preempt_mode="CANCEL", short_max_time=7,
                         enforce_part_limits="ALL", send_user_signal=True).render(PORTS, None)
    lines = text.splitlines()
    assert "PreemptType=preempt/partition_prio" in lines and "EnforcePartLimits=ALL" in lines
    assert "SlurmctldParameters=preempt_send_user_signal" in lines
    assert "ReturnToService=1" in lines
    partitions = {line.split()[0]: line for line in lines if line.startswith("PartitionName=")}
    assert sorted(partitions) == ["PartitionName=cancel", "PartitionName=debug", "PartitionName=high",
                                  "PartitionName=short"]
    assert "GraceTime=45 PreemptMode=CANCEL" in partitions["PartitionName=debug"]
    assert "Default=YES" in partitions["PartitionName=debug"]
    assert "PreemptMode=CANCEL" in partitions["PartitionName=cancel"]
    assert "MaxTime=7 " in partitions["PartitionName=short"]
    assert "PriorityTier=10 PreemptMode=OFF" in partitions["PartitionName=high"]


def test_reservations_are_read_from_scontrol_one_liners():
    found = parse_reservations(RESERVATION + "\n")
    assert [(r.name, r.state, r.nodes, r.users, r.partition) for r in found] == [
        ("maint1", "INACTIVE", "node[1-3]", "root", "(null)")]
    assert found[0].start == parse_time("2026-12-07T05:12:17")
    assert found[0].end - found[0].start == 1200
    assert "MAINT" in found[0].flags.split(",")
    assert parse_reservations("No reservations in the system\n") == []


def test_a_value_with_spaces_runs_up_to_the_next_key():
    fields = parse_scontrol_line("ReservationName=x Comment=down for a week State=ACTIVE")
    assert fields == {"ReservationName": "x", "Comment": "down for a week", "State": "ACTIVE"}


def test_loop_rows_keep_a_comment_with_the_separator():
    rows = parse_loop_rows("7|PD|svc||N/A|N/A|BeginTime|/w|traefik,svc,http://h:1|x\n")
    assert rows == [{"id": "7", "state": "PD", "name": "svc", "nodes": "", "start": "N/A", "end": "N/A",
                     "reason": "BeginTime", "workdir": "/w", "comment": "traefik,svc,http://h:1|x"}]


def test_node_state_flags_are_not_part_of_the_base_state():
    assert NodeRow("node1", "mix*", "none").base_state == "mix"
    assert NodeRow("node1", "drng", "x").base_state == "drng"


def test_seconds_below_wanted_and_back():
    points = [(0, 2), (1, 2), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert below_wanted(points, 2, 0) == (2.0, 4)
    assert below_wanted(points, 2, 4) == (0.0, 0.0)
    assert below_wanted([(0, 2), (1, 1), (2, 1)], 2, 0) == (1.0, None)
