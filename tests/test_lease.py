"""core/lease: one leader among the loops of a root, chosen on the shared filesystem without locks."""

import os

from forever_slurm.core import lease

from fakes import Clock


def pair(tmp_path, clock=None, alive=lambda pid: True):
    clock = clock or Clock(1000.0)
    directory = str(tmp_path / "leader")
    a = lease.Lease(directory, "login1", pid=11, clock=clock, monotonic=clock, pid_alive=alive)
    b = lease.Lease(directory, "login2", pid=22, clock=clock, monotonic=clock, pid_alive=alive)
    return a, b, clock


def test_the_first_loop_leads_and_the_second_follows(tmp_path):
    a, b, clock = pair(tmp_path)
    assert a.step() is True and a.may_act()
    assert b.step() is False and not b.may_act()
    assert lease.read_current(a.directory).host == "login1"


def test_a_leader_killed_is_replaced_within_the_lapse(tmp_path):
    a, b, clock = pair(tmp_path)
    a.step()
    b.step()
    for _ in range(4):                      # a renews every 4 s: b keeps following
        clock.now += 4
        a.step()
        assert b.step() is False
    took = None
    for second in range(1, 60):             # a is killed: nobody renews
        clock.now += 1
        if b.step():
            took = second
            break
    assert took is not None and took <= lease.Term(1, "", 0, "").lapse + 1 <= 30
    assert lease.read_current(b.directory).epoch == 2


def test_a_paused_leader_stops_acting_and_follows_when_it_wakes(tmp_path):
    a, b, clock = pair(tmp_path)
    a.step()
    b.step()
    clock.now += 120                         # a is SIGSTOPped for 2 minutes; b takes over meanwhile
    for _ in range(30):
        b.step()
        clock.now += 1
    assert b.may_act()
    assert not a.may_act(), "woken, a acts on nothing before it has renewed"
    assert a.step() is False and not a.may_act(), "its renewal finds the higher term: it follows"
    assert b.step() is True and b.may_act()


def test_never_two_leaders_at_once_over_a_random_schedule(tmp_path):
    import random
    rng = random.Random(7)
    a, b, clock = pair(tmp_path)
    loops = [a, b]
    paused = {id(a): 0.0, id(b): 0.0}
    for _ in range(3000):
        clock.now += rng.choice((0.5, 1.0, 2.0))
        for loop in loops:
            if paused[id(loop)] > clock.now:
                continue
            if rng.random() < 0.01:
                paused[id(loop)] = clock.now + rng.choice((5, 30, 120))
                continue
            loop.step()
        actors = [loop for loop in loops if loop.may_act() and paused[id(loop)] <= clock.now]
        assert len(actors) <= 1


def test_a_restart_on_the_same_host_takes_over_at_once(tmp_path):
    clock = Clock(1000.0)
    directory = str(tmp_path / "leader")
    old = lease.Lease(directory, "login1", pid=11, clock=clock, monotonic=clock, pid_alive=lambda pid: False)
    old.step()
    new = lease.Lease(directory, "login1", pid=12, clock=clock, monotonic=clock, pid_alive=lambda pid: False)
    assert new.step() is True


def test_a_clean_stop_releases_at_once(tmp_path):
    a, b, clock = pair(tmp_path)
    a.step()
    b.step()
    a.release()
    assert b.step() is True


def test_alone_it_renews_rarely(tmp_path):
    a, b, clock = pair(tmp_path)
    a.step(others_alive=False)
    path = os.path.join(a.directory, "term-1")
    before = os.stat(path).st_ino
    for _ in range(20):
        clock.now += 1
        a.step(others_alive=False)
    assert os.stat(path).st_ino == before, "no renewal within 30 s"
    clock.now += 11
    a.step(others_alive=False)
    assert os.stat(path).st_ino != before and a.may_act()


def test_odd_files_in_the_lease_directory_are_ignored(tmp_path):
    a, b, clock = pair(tmp_path)
    os.makedirs(a.directory)
    for name, text in (("term-9", "{not json"), ("term-x", "{}"), ("term-8", '{"host": 1}')):
        with open(os.path.join(a.directory, name), "w") as handle:
            handle.write(text)
    assert lease.read_current(a.directory) is None
    assert a.step() is True and lease.read_current(a.directory).epoch == 10     # after every file there
