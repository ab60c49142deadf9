"""status with several login nodes: who leads and since when, each host's loop and Traefik with the age of its
heartbeat, a host silent for over 60 s shown as gone; every field of a host's file is untrusted."""

import json
import os

from forever_slurm.common import settings
from forever_slurm.core import lease
from forever_slurm.observe import login_nodes, status

NOW = 1000000.0


def layout_for(root, host="login2"):
    (root / ".env").write_text('SERVICE_LIST=""\n')
    return settings.Layout.for_host(str(root), host)


def host_report(layout, host, age, **fields):
    path = os.path.join(layout.hosts_dir, host, "host.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(fields.pop("raw", None) or json.dumps(dict({"host": host}, **fields)))
    os.utime(path, (NOW - age, NOW - age))


def lead(layout, host, since_age, beat_age):
    """A term as the lead's core/lease writes it: claimed since_age ago, renewed beat_age ago."""
    clock = [NOW - since_age]
    holder = lease.Lease(layout.lease_dir, host, pid=4242, clock=lambda: clock[0], monotonic=lambda: clock[0])
    assert holder.step()
    clock[0] = NOW - beat_age
    holder.step()
    path = os.path.join(layout.lease_dir, "term-%d" % holder.held.epoch)
    os.utime(path, (NOW - beat_age, NOW - beat_age))
    return holder


def test_status_shows_the_leader_each_host_and_a_gone_one(tmp_path):
    layout = layout_for(tmp_path)
    host_report(layout, "login1", 3, pid=111, role="leader", since=NOW - 600, traefik_port=13013, traefik_ok=True)
    host_report(layout, "login2", 5, pid=222, role="follower", traefik_port=14013, traefik_ok=False)
    host_report(layout, "login3", 300, pid=333, role="follower", traefik_port=13013, traefik_ok=True)
    lead(layout, "login1", since_age=600, beat_age=2)
    report = status.collect(layout, now=NOW)
    view = report["hosts"]
    assert view["this_host"] == "login2" and view["leader"]["host"] == "login1"
    assert not view["leader"]["lapsed"] and round(view["leader"]["beat_age"]) == 2
    rows = {row["host"]: row for row in view["hosts"]}
    assert [rows[h]["gone"] for h in ("login1", "login2", "login3")] == [False, False, True]
    assert rows["login2"]["here"] and rows["login1"]["pid"] == 111
    text = status.render(report)
    assert "login nodes: login1 leads for 9m (pid 4242, term 1; lease renewed 2s ago)" in text
    lines = text.splitlines()
    (one,) = [line for line in lines if line.startswith("login1 ")]
    (two,) = [line for line in lines if line.startswith("login2 (here)")]
    (three,) = [line for line in lines if line.startswith("login3 ")]
    assert "leader" in one and "pid 111" in one and "up :13013" in one and "3s ago" in one
    assert "follower" in two and "DOWN :14013" in two
    assert "GONE (was follower)" in three and "5m ago" in three
    json.dumps(report)      # status --json


def test_a_lapsed_lease_and_no_lease_are_said(tmp_path):
    layout = layout_for(tmp_path)
    host_report(layout, "login1", 100, pid=111, role="leader")
    host_report(layout, "login2", 1, pid=222, role="follower")
    text = status.render(status.collect(layout, now=NOW))
    assert "login nodes: no loop leads yet" in text
    lead(layout, "login1", since_age=900, beat_age=120)
    report = status.collect(layout, now=NOW)
    assert report["hosts"]["leader"]["lapsed"]
    assert "login1's lease lapsed (lease renewed 2m ago): another loop takes over" in status.render(report)


def test_every_field_of_a_host_file_is_untrusted(tmp_path):
    layout = layout_for(tmp_path)
    host_report(layout, "login1", 1, pid="1; rm -rf /", role="king", traefik_port=99999, traefik_ok="yes",
                since="yesterday")
    host_report(layout, "login3", 1, raw="[1, 2")
    host_report(layout, "login4", 1, raw='"just a string"')
    os.makedirs(os.path.join(layout.hosts_dir, "..bad"))
    os.makedirs(os.path.join(layout.hosts_dir, "login5"))       # a folder, no report yet
    host_report(layout, "login2", 1, pid=True, role="follower")
    view = login_nodes.collect(layout, now=NOW)
    rows = {row["host"]: row for row in view["hosts"]}
    assert "..bad" not in rows
    assert rows["login1"]["pid"] is None and rows["login1"]["role"] is None
    assert rows["login1"]["traefik_port"] is None and rows["login1"]["traefik_ok"] is None
    assert rows["login1"]["since"] is None and rows["login2"]["pid"] is None
    assert rows["login3"]["problem"].startswith("unreadable host.json")
    assert rows["login4"]["problem"] == "host.json is not an object"
    assert rows["login5"]["problem"] == "no host.json"
    text = "\n".join(login_nodes.lines(view, status._duration))
    assert "rm -rf" not in text and "king" not in text


def test_one_host_looks_as_it_always_did(tmp_path):
    layout = layout_for(tmp_path, "login1")
    before = status.render(status.collect(layout, now=NOW))
    host_report(layout, "login1", 1, pid=111, role="leader")
    lead(layout, "login1", since_age=60, beat_age=1)
    report = status.collect(layout, now=NOW)
    assert report["hosts"]["leader"]["host"] == "login1"
    assert status.render(report) == before


def test_status_writes_nothing_for_the_hosts(tmp_path):
    layout = layout_for(tmp_path)
    status.collect(layout, now=NOW)
    assert sorted(os.listdir(str(tmp_path))) == [".env"]


def test_a_stopped_loop_is_started_by_this_roots_own_unit(tmp_path):
    from forever_slurm.core import state
    layout = layout_for(tmp_path)
    (tmp_path / ".env").write_text('SERVICE_LIST="svc/1"\n')
    os.makedirs(layout.work)
    state.save(layout.state_file, state.empty_snapshot()._replace(desired={"svc": 1}, updated_at=NOW - 60))
    text = status.render(status.collect(layout, now=NOW))
    assert "systemctl --user start forever-slurm-%s, or run config" % layout.unit_id in text
