"""Fast tests of the ssh tunnel supervisor and setup: fake clock, fake ssh, fake probe."""

import logging
import os
import queue
import stat
import subprocess

import pytest

from forever_slurm.common import settings as settings_mod
from forever_slurm.setup import sshsetup
from forever_slurm.tunnel import sshtunnel
from forever_slurm.setup.configure import ConfigCancelled
from forever_slurm.common.errors import ConfigError, ForeverError

CHANGED_BANNER = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:A/6CucZDG2UNtNElvhY47bG3qmQxAVJfHB0Zzai/LPU.
Please contact your system administrator.
Add correct host key in /r/.work/ssh/known_hosts to get rid of this message.
Offending ED25519 key in /r/.work/ssh/known_hosts:3
  remove with:
  ssh-keygen -f "/r/.work/ssh/known_hosts" -R "[login1]:2222"
Host key for [login1]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""


# ---------------------------------------------------------------- a simulated world of login nodes

CONNECT_TIMEOUT = 5   # as ssh_argv's ConnectTimeout

class World:
    """Fake time, login nodes that go up and down, and the ssh processes started against them."""

    def __init__(self, down=None, dead_link=None, no_traefik=None, dropping=None, denied=None, silent=None,
                 local_taken=None):
        self.now = 0.0
        self.local_taken = local_taken or (lambda t: False)      # does another program hold the local port?
        self.down = down or (lambda node, t: False)              # is node's sshd down at time t?
        self.dropping = dropping or (lambda node, t: False)      # does node drop every packet?
        self.denied = denied or (lambda node, t: False)          # does node refuse our key?
        self.silent = silent or (lambda node, t: False)          # has node stopped answering (frozen)?
        self.looks = []                                          # (t, node) of each reachability look
        self.dead_link = dead_link or (lambda node, t: False)    # ssh alive but nothing gets through?
        self.no_traefik = no_traefik or (lambda node, t: False)  # link fine, nothing listens behind it?
        self.procs = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert 0 <= seconds <= 60, seconds
        self.now += max(seconds, 0.001)

    def popen(self, argv, **kwargs):
        assert kwargs["stderr"] is subprocess.PIPE and kwargs["universal_newlines"]
        proc = FakeSsh(self, argv[-1].split("@")[-1])
        self.procs.append(proc)
        return proc

    def starts(self):
        return [(p.started, p.node) for p in self.procs]

    def live(self):
        return [p for p in self.procs if p.poll() is None]

    def probe(self):
        if self.local_taken(self.now):
            return sshtunnel.PROBE_OK        # the other program on the local port answers
        live = self.live()
        if not live:
            return sshtunnel.PROBE_REFUSED
        ssh = live[-1]
        if not ssh.forwarding():
            return sshtunnel.PROBE_REFUSED
        if self.dead_link(ssh.node, self.now) or self.silent(ssh.node, self.now):
            return sshtunnel.PROBE_NO_ANSWER
        if self.no_traefik(ssh.node, self.now):
            ssh.stderr.put("channel 3: open failed: connect failed: Connection refused")
            return sshtunnel.PROBE_NO_ANSWER
        return sshtunnel.PROBE_OK

    def reachable(self, node):
        """As sshd_answers: a frozen sshd's kernel still accepts the connection, but no greeting comes."""
        self.looks.append((self.now, node))
        return not self.down(node, self.now) and not self.dropping(node, self.now) and not self.silent(node, self.now)

    def ssh_listens(self, pid):
        return not self.local_taken(self.now)


class Pipe:
    """ssh's stderr: lines arrive while it runs; reading ends when it exits."""

    def __init__(self):
        self.queue = queue.Queue()

    def put(self, line):
        self.queue.put(line + "\n")

    def close(self):
        self.queue.put(None)

    def __iter__(self):
        while True:
            item = self.queue.get(timeout=30)
            if item is None:
                return
            yield item


class FakeSsh:
    """An ssh that fails at once against a down node, else runs until the node goes down or it is stopped."""

    def __init__(self, world, node):
        self.world = world
        self.node = node
        self.started = world.now
        self.pid = 1000 + len(world.procs)
        self.returncode = None
        self.terminated = False
        self.stderr = Pipe()
        if world.down(node, world.now):
            self._exit(255, "ssh: connect to host %s port 22: Connection refused" % node)
        elif world.denied(node, world.now):
            self._exit(255, "alice@%s: Permission denied (publickey)." % node)

    def _exit(self, code, line=None):
        if self.returncode is None:
            self.returncode = code
            if line:
                self.stderr.put(line)
            self.stderr.close()

    def poll(self):
        if self.returncode is None and self.world.local_taken(self.started) and self.world.now - self.started >= 0.3:
            # It logged in, then could not listen on the local port (ExitOnForwardFailure).
            self.stderr.put("bind [127.0.0.1]:13013: Address already in use")
            self.stderr.put("channel_setup_fwd_listener_tcpip: cannot listen to port: 13013")
            self._exit(255, "Could not request local forwarding.")
        elif self.returncode is None and self.world.dropping(self.node, self.started):
            # ConnectTimeout=5: the SYNs go unanswered, then ssh gives up.
            if self.world.now - self.started >= CONNECT_TIMEOUT:
                self._exit(255, "ssh: connect to host %s port 22: Connection timed out" % self.node)
        elif self.returncode is None and self.world.down(self.node, self.world.now):
            self._exit(255, "Connection to %s closed by remote host." % self.node)
        elif self.returncode is None and all(self.world.silent(self.node, self.world.now - ago) for ago in (0, 6)):
            # ServerAliveInterval=2 x ServerAliveCountMax=3 went unanswered.
            self._exit(255, "Timeout, server %s not responding." % self.node)
        return self.returncode

    def forwarding(self):
        return self.returncode is None and not self.world.dropping(self.node, self.started)

    def terminate(self):
        self.terminated = True
        self._exit(-15)

    kill = terminate

    def wait(self, timeout=None):
        return self.returncode


class StopAt:
    """A stop event that fires when the fake clock reaches t (keeps every run bounded)."""

    def __init__(self, world, t):
        self.world = world
        self.t = t

    def is_set(self):
        return self.world.now >= self.t


def supervisor(world, nodes=("login1",), reachable=None, explain=None, random=lambda: 0.5, local_port_user=None,
               forwards_through=None, **pacing):
    """A Supervisor in the fake world; random 0.5 means no jitter, so waits are exact."""
    # A short settle: fake ssh writes its "open failed" line before the probe returns.
    pacing.setdefault("settle", 0.05)
    tunnel = sshtunnel.Tunnel(lambda node: ["ssh", "-N", node], list(nodes), world.probe,
                              reachable=reachable, explain=explain, local_port_user=local_port_user,
                              forwards_through=forwards_through)
    return sshtunnel.Supervisor(tunnel, sshtunnel.Pacing(**pacing), popen=world.popen, clock=world.clock,
                                sleep=world.sleep, random=random)


def up_times(sup):
    return [t for t, state, _ in sup.history if state == "up"]


def last_state(sup):
    """The state before run() returned (run always ends in "stopped")."""
    assert sup.state == "stopped"
    return sup.history[-1][1] if sup.history else None


def gaps(times):
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


# ---------------------------------------------------------------- ssh_argv

def test_ssh_argv_forwards_one_port_with_strict_options():
    argv = sshtunnel.ssh_argv("/usr/bin/ssh", "login1", "alice", "/k/id", "/r/.work/ssh/known_hosts",
                              13013, 14014, ssh_port=2222, alive_interval=10, alive_count=4)
    assert argv[0] == "/usr/bin/ssh" and argv[-1] == "alice@login1"
    assert argv[argv.index("-L") + 1] == "127.0.0.1:13013:127.0.0.1:14014"
    assert argv[argv.index("-i") + 1] == "/k/id"
    assert argv[argv.index("-p") + 1] == "2222"
    assert "-N" in argv
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    for wanted in ("ExitOnForwardFailure=yes", "ServerAliveInterval=10", "ServerAliveCountMax=4",
                   "BatchMode=yes", "IdentitiesOnly=yes", "StrictHostKeyChecking=yes",
                   "UserKnownHostsFile=/r/.work/ssh/known_hosts"):
        assert wanted in options


def test_ssh_argv_without_user_or_port_and_with_awkward_paths():
    argv = sshtunnel.ssh_argv("ssh", "login1", "", "/k/100%/id", "/my root/kh", 1, 2,
                              host_key_checking="accept-new")
    assert argv[-1] == "login1" and "-p" not in argv
    assert '-o' in argv and 'UserKnownHostsFile="/my root/kh"' in argv
    assert argv[argv.index("-i") + 1] == "/k/100%%/id"
    assert "StrictHostKeyChecking=accept-new" in argv


def test_host_pattern_brackets_non_default_ports():
    assert sshtunnel.host_pattern("login1") == "login1"
    assert sshtunnel.host_pattern("login1", 22) == "login1"
    assert sshtunnel.host_pattern("login1", 2222) == "[login1]:2222"


# ---------------------------------------------------------------- backoff, reset, early reconnect

def test_backoff_doubles_from_one_second_up_to_sixty():
    world = World(down=lambda node, t: True)
    supervisor(world).run(StopAt(world, 400))
    times = [t for t, _ in world.starts()]
    expected = [min(1.0 * 2 ** i, 60.0) for i in range(len(times) - 1)]
    assert len(times) >= 9
    assert gaps(times) == expected


def test_backoff_resets_after_the_tunnel_stayed_healthy():
    # Down 0-40 s (delays grow to 16 s), up 40-200 s, down again 200-230 s.
    world = World(down=lambda node, t: t < 40 or 200 <= t < 230)
    supervisor(world, healthy_reset=30).run(StopAt(world, 300))
    times = [t for t, _ in world.starts()]
    after_second_outage = [t for t in times if t >= 200]
    # Back to 1 s (not the 32 s the first outage reached), then doubling again.
    assert after_second_outage[0] - 200 == pytest.approx(1.0, abs=0.01)
    assert gaps(after_second_outage)[:3] == [2.0, 4.0, 8.0]


def test_a_returning_node_is_reconnected_before_the_backoff_ends():
    world = World(down=lambda node, t: 1 <= t < 40.2)
    sup = supervisor(world, reachable=world.reachable)
    sup.run(StopAt(world, 60))
    back = [t for t, _ in world.starts() if t >= 40.2]
    # The backoff at that point is 16-32 s; the reachability poll finds the node within reach_interval.
    assert back and back[0] - 40.2 <= sup.pacing.reach_interval + sup.pacing.tick
    assert last_state(sup) == "up"


def test_without_reachability_the_backoff_decides():
    world = World(down=lambda node, t: 1 <= t < 40.2)
    supervisor(world).run(StopAt(world, 80))
    back = [t for t, _ in world.starts() if t >= 40.2]
    assert back[0] - 40.2 > 5


# ---------------------------------------------------------------- failover

def test_moves_to_the_next_node_after_three_failed_starts():
    world = World(denied=lambda node, t: node == "login1")
    sup = supervisor(world, nodes=["login1", "login2"], failover_after=3)
    sup.run(StopAt(world, 30))
    order = [node for _, node in world.starts()]
    assert order == ["login1", "login1", "login1", "login2"]
    assert sup.node == "login2" and last_state(sup) == "up"


def test_cycles_through_all_nodes_when_all_refuse_the_key():
    world = World(denied=lambda node, t: True)
    supervisor(world, nodes=["a", "b", "c"], failover_after=2).run(StopAt(world, 600))
    order = [node for _, node in world.starts()][:7]
    assert order == ["a", "a", "b", "b", "c", "c", "a"]


def test_a_single_node_is_never_abandoned():
    world = World(down=lambda node, t: t < 100)
    sup = supervisor(world, failover_after=2)
    sup.run(StopAt(world, 200))
    assert {node for _, node in world.starts()} == {"login1"} and last_state(sup) == "up"


def test_a_node_that_does_not_accept_connections_is_left_at_once_and_all_are_tried_before_waiting():
    world = World(down=lambda node, t: node != "c" or t < 30)
    sup = supervisor(world, nodes=["a", "b", "c"], reachable=world.reachable)
    sup.run(StopAt(world, 40))
    starts = world.starts()
    assert [node for _, node in starts[:6]] == ["a", "b", "c", "a", "b", "c"]
    # One round at once, then the backoff (1 s, then 2 s) before the next round: no tight loop.
    assert [t for t, _ in starts[:3]] == [0, 0, 0] and starts[3][0] >= 1.0 and starts[6][0] >= 3.0
    # c answered again at 30 s: taken at once, whichever node was next in turn.
    assert up_times(sup) and 30 <= up_times(sup)[0] <= 30 + 2 * sup.pacing.reach_interval + sup.pacing.tick
    assert sup.node == "c"


def test_a_node_that_drops_packets_fails_over_within_ten_seconds(caplog):
    world = World(dropping=lambda node, t: node == "login1")
    sup = supervisor(world, nodes=["login1", "login2"], reachable=world.reachable)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 30))
    assert [node for _, node in world.starts()] == ["login1", "login2"]
    assert up_times(sup)[0] <= CONNECT_TIMEOUT + 1 < 10 and sup.node == "login2"
    assert any("switching from login1 to login2: it does not accept connections" in r.getMessage()
               for r in caplog.records)


def test_flapping_outages_three_seconds_apart_are_each_healed_within_two_seconds():
    # Up 0-10 s, then three 3 s outages with 3 s of service between them, like a restarting login node.
    outages = [(10, 13), (16, 19), (22, 25)]
    world = World(down=lambda node, t: any(a <= t < b for a, b in outages))
    sup = supervisor(world, reachable=world.reachable)
    sup.run(StopAt(world, 40))  # before 30 s of health would reset the backoff
    ups = up_times(sup)
    assert len(ups) == 4, sup.history
    for (_, back), up in zip(outages, ups[1:]):
        assert back <= up <= back + 2, (back, up)
    assert sup.delay > sup.pacing.backoff_initial, "the backoff had grown: recovery did not rely on a reset"


def test_a_node_that_answers_but_refuses_the_key_is_not_polled_during_the_backoff():
    world = World(denied=lambda node, t: True)
    supervisor(world, reachable=world.reachable).run(StopAt(world, 200))
    # One look per backoff (it answered), not four a second for 200 s.
    assert len(world.looks) <= len(world.procs) + 1


def test_backoff_waits_are_jittered():
    for value, factor in ((0.0, 0.8), (1.0, 1.2)):
        world = World(down=lambda node, t: True)
        supervisor(world, random=lambda: value).run(StopAt(world, 40))
        times = [t for t, _ in world.starts()]
        assert gaps(times)[:4] == [round(factor * d, 3) for d in (1, 2, 4, 8)]


# ---------------------------------------------------------------- end-to-end probe

def test_a_tunnel_that_stops_forwarding_is_restarted_after_k_failures(caplog):
    world = World(dead_link=lambda node, t: 50 <= t < 70)
    sup = supervisor(world, probe_interval=5, probe_failures=3, settle=0.002)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 120))
    first = world.procs[0]
    assert first.terminated, "the ssh that stopped forwarding was not stopped"
    assert len(world.procs) == 2 and last_state(sup) == "up"
    assert world.procs[1].started - 50 <= 3 * 5 + 1 + 1
    assert any("stopped forwarding" in r.getMessage() for r in caplog.records)


def test_a_node_whose_tunnel_goes_silent_is_left_for_the_next_at_once(caplog):
    world = World(dead_link=lambda node, t: node == "login1" and t >= 50)
    sup = supervisor(world, nodes=["login1", "login2"], probe_interval=5, probe_failures=3, settle=0.002)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 80))
    assert [node for _, node in world.starts()] == ["login1", "login2"]
    # The first probe after 50 s fails, two quick rechecks confirm it, login2 takes over.
    assert up_times(sup)[1] <= 50 + 5 + 2 * sup.pacing.recheck_interval + 1
    assert any("the tunnel through it went silent" in r.getMessage() for r in caplog.records)


def test_a_node_that_ssh_finds_not_responding_is_left_for_the_next_at_once(caplog):
    world = World(silent=lambda node, t: node == "login1" and t >= 50)
    # Probes rarely: here ssh's ServerAlive notices first.
    sup = supervisor(world, nodes=["login1", "login2"], probe_interval=30, settle=0.002)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 80))
    assert [node for _, node in world.starts()] == ["login1", "login2"]
    assert up_times(sup)[1] <= 50 + 6 + 1
    assert any("the tunnel through it went silent" in r.getMessage() for r in caplog.records)


def test_a_frozen_node_is_not_reconnected_to_until_its_sshd_answers(caplog):
    """A SIGSTOPped sshd: its kernel still accepts TCP connections. The log had said "accepts connections
    again; reconnecting now" every 5 s, each time an ssh that waited out its ConnectTimeout."""
    world = World(silent=lambda node, t: 20 <= t < 100)
    sup = supervisor(world, reachable=world.reachable, probe_interval=30, settle=0.002)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 130))
    said = [r.getMessage() for r in caplog.records]
    assert sum("answers again" in line for line in said) <= 1
    back = [t for t, _ in world.starts() if t >= 100]
    assert back and back[0] - 100 <= sup.pacing.reach_interval + sup.pacing.tick


def test_after_a_failover_the_log_says_how_long_clients_had_no_answer(caplog):
    """login1 freezes at 50 s; ssh notices after its ServerAlive 6 s, login2 is up 0.3 s later. The log
    had said "up after 0.3s down" while clients saw about 6.6 s without an answer."""
    world = World(silent=lambda node, t: node == "login1" and t >= 50)
    sup = supervisor(world, nodes=["login1", "login2"], probe_interval=5, probe_failures=3, settle=0.002)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 80))
    second_up = up_times(sup)[1]
    (line,) = [r.getMessage() for r in caplog.records if ": up via login2" in r.getMessage()]
    at_most = float(line.split("for at most ")[1].split("s")[0])
    # At most: since the last answer, which came at most one probe interval before the freeze.
    assert second_up - 50 <= at_most <= second_up - 50 + sup.pacing.probe_interval, line
    assert "the last answer came through login1" in line


def test_a_taken_local_port_is_not_logged_into_and_backs_off(caplog):
    """Another program on the local port: the tunnel had logged "up" (the probe reached that program)
    and logged into the login node about once a second, forever."""
    world = World(local_taken=lambda t: t < 100)
    holder = lambda: "pid 4242 (python3)" if world.local_taken(world.now) else ""  # noqa: E731
    sup = supervisor(world, local_port_user=holder, forwards_through=world.ssh_listens)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 140))
    assert [t for t, _ in world.starts()][0] >= 100, "no login while the port is taken"
    said = [r.getMessage() for r in caplog.records]
    assert sum("the local port is taken by pid 4242 (python3)" in line for line in said) == 1
    assert up_times(sup) and up_times(sup)[0] >= 100
    assert last_state(sup) == "up"


def test_a_port_taken_after_the_check_is_not_called_up_and_backs_off(caplog):
    """The port is free when looked at, taken before ssh binds it (or the look is not possible): ssh logs
    in, the probe reaches the other program, ssh exits with "Address already in use"."""
    world = World(local_taken=lambda t: t < 60)
    sup = supervisor(world, nodes=["login1", "login2"], forwards_through=world.ssh_listens)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 80))
    before = [t for t, _ in world.starts() if t < 60]
    assert len(before) <= 7, before                   # 1, 2, 4, 8, 16, 32 s apart: not once a second
    assert {node for _, node in world.starts() if node} == {"login1"}, "not the login node's fault: no failover"
    assert not [t for t in up_times(sup) if t < 60]


def test_one_failed_probe_does_not_restart():
    world = World(dead_link=lambda node, t: 50 <= t < 50.1)
    supervisor(world, probe_interval=5, probe_failures=3).run(StopAt(world, 120))
    assert len(world.procs) == 1


def test_a_start_that_never_answers_times_out_and_counts_as_failed():
    world = World(dead_link=lambda node, t: node == "login1")
    sup = supervisor(world, nodes=["login1", "login2"], start_timeout=20, failover_after=2, settle=0.002)
    sup.run(StopAt(world, 120))
    order = [node for _, node in world.starts()]
    assert order[:3] == ["login1", "login1", "login2"]
    assert world.procs[0].terminated and last_state(sup) == "up"


def test_traefik_down_behind_a_working_ssh_keeps_ssh_and_logs_once(caplog):
    world = World(no_traefik=lambda node, t: 50 <= t < 150)
    sup = supervisor(world, probe_interval=5, probe_failures=3, settle=2.0)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 200))
    assert len(world.procs) == 1, "ssh was restarted although the login node answered"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    behind = [l for l in lines if "nothing answers behind it" in l]
    assert len(behind) == 1 and "Traefik running there?" in behind[0]
    assert [state for _, state, _ in sup.history] == ["up", "connected", "up"]


def test_with_several_nodes_an_empty_login_node_is_left_for_the_next(caplog):
    world = World(no_traefik=lambda node, t: node == "login1")
    sup = supervisor(world, nodes=["login1", "login2"], start_timeout=20, settle=2.0)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 100))
    assert [node for _, node in world.starts()] == ["login1", "login2"]
    assert world.procs[1].started - world.procs[0].started <= 20 + 5 + 1 + 1
    assert last_state(sup) == "up" and sup.node == "login2"
    assert any("switching from login1 to login2: nothing answered" in r.getMessage() for r in caplog.records)


def test_a_refused_forward_is_explained(caplog):
    world = World(no_traefik=lambda node, t: True)
    explain = lambda lines, node: sshtunnel.diagnose(  # noqa: E731
        [l.replace("connect failed: Connection refused", "administratively prohibited: open failed")
         for l in lines], node, "/kh", "/k")
    sup = supervisor(world, explain=explain, settle=2.0)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 30))
    assert len(world.procs) == 1
    assert any("permitopen" in r.getMessage() for r in caplog.records)


def test_stop_event_ends_run_and_stops_ssh():
    world = World()
    sup = supervisor(world)
    sup.run(StopAt(world, 10))
    assert world.procs and all(p.terminated for p in world.procs)
    assert sup.state == "stopped"


# ---------------------------------------------------------------- logging: state changes, not probes

def test_logs_one_line_per_state_change(caplog):
    # Up, then down for 200 s (about a dozen failed restarts), then up again for a long time.
    world = World(down=lambda node, t: 10 <= t < 210)
    sup = supervisor(world, reachable=None)
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 600))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    ups = [l for l in lines if ": up via" in l]
    downs = [l for l in lines if ": down (" in l]
    assert len(world.procs) >= 8
    assert len(ups) == 2 and "clients had no answer through the tunnel for at most" in ups[1]
    # "closed by remote host", then "connection refused" for every retry: two distinct lines.
    assert len(downs) == 2
    assert "closed by remote host" in downs[0] and "Connection refused" in downs[1]
    assert len(lines) == 4, lines


def test_switching_nodes_is_logged(caplog):
    world = World(down=lambda node, t: node == "login1")
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        supervisor(world, nodes=["login1", "login2"]).run(StopAt(world, 30))
    assert any("switching from login1 to login2" in r.getMessage() for r in caplog.records)


def test_down_line_carries_the_diagnosis(caplog):
    world = World(down=lambda node, t: True)
    sup = supervisor(world, explain=lambda lines, node: sshtunnel.diagnose(lines, node, "/kh", "/k"))
    with caplog.at_level(logging.INFO, logger="forever_slurm.tunnel.sshtunnel"):
        sup.run(StopAt(world, 5))
    assert any("its sshd is down" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- ssh's messages, explained

def test_changed_host_key_names_the_file_line_and_the_fix():
    err = sshsetup.ssh_failure(CHANGED_BANNER.splitlines(), "login1", "/r/.work/ssh/known_hosts", "/k", 2222)
    text = str(err)
    assert err.path == "/r/.work/ssh/known_hosts" and err.line == 3
    assert text.startswith("/r/.work/ssh/known_hosts:3: ")
    assert "CHANGED" in text
    assert "ssh-keygen -R '[login1]:2222' -f '/r/.work/ssh/known_hosts'" in text
    assert "SHA256:A/6CucZDG2UNtNElvhY47bG3qmQxAVJfHB0Zzai/LPU" in text


def test_refused_key_tells_the_user_to_add_the_line():
    line = sshsetup.authorized_line("ssh-ed25519 AAAAkey me@web", 13013)
    lines = ["root@login1: Permission denied (publickey)."]
    text = str(sshsetup.ssh_failure(lines, "login1", "/kh", "/k/id", authorized=line))
    assert "refused the key /k/id" in text and line in text


@pytest.mark.parametrize("stderr, words", [
    ("No ED25519 host key is known for login1 and you have requested strict checking.\n"
     "Host key verification failed.", "config --ssh"),
    ("channel 2: open failed: administratively prohibited: open failed", "permitopen"),
    ("bind [127.0.0.1]:13013: Address already in use\nCould not request local forwarding.", "FS_SSH_LOCAL_PORT"),
    ("ssh: Could not resolve hostname nohost: Name or service not known", "FS_SSH_LOGIN_NODE"),
])
def test_other_ssh_failures_say_what_to_do(stderr, words):
    found = sshtunnel.diagnose(stderr.splitlines(), "login1", "/kh", "/k")
    assert found is not None and words in found[0]


def test_unknown_failures_keep_sshs_own_words():
    err = sshsetup.ssh_failure(["Warning: Permanently added 'x'", "kex_exchange_identification: boom"],
                               "login1", "/kh", "/k")
    assert "kex_exchange_identification: boom" in str(err) and "Permanently" not in str(err)


# ---------------------------------------------------------------- setup

def test_authorized_line_is_restricted_to_one_forward():
    line = sshsetup.authorized_line("ssh-ed25519 AAAAC3Nza me@web\n", 14014)
    # What each option refuses is tested against a real sshd in tests/e2e/test_tunnel.py.
    assert line == ('command="/bin/false",restrict,port-forwarding,permitopen="127.0.0.1:14014",'
                    'permitlisten="127.0.0.1:1" ssh-ed25519 AAAAC3Nza me@web')
    with pytest.raises(ConfigError):
        sshsetup.authorized_line("", 1)


def test_ensure_key_makes_a_private_key_and_keeps_an_existing_one(tmp_path):
    if sshsetup.shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (Debian package openssh-client)")
    key = str(tmp_path / "keys" / "id")
    pub = sshsetup.ensure_key(key)
    assert pub.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(tmp_path / "keys")).st_mode) == 0o700
    with open(key) as handle:
        private = handle.read()
    os.chmod(key, 0o644)
    assert sshsetup.ensure_key(key) == pub
    with open(key) as handle:
        assert handle.read() == private
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_ensure_key_refuses_a_key_with_a_passphrase(tmp_path):
    if sshsetup.shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (Debian package openssh-client)")
    key = str(tmp_path / "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", key], check=True, timeout=30)
    with pytest.raises(ConfigError) as caught:
        sshsetup.ensure_key(key)
    assert "passphrase" in str(caught.value)


def _settings(tmp_path, env_text=""):
    (tmp_path / ".env").write_text(env_text)
    layout = settings_mod.Layout(str(tmp_path))
    return settings_mod.load(layout, environ={"USER": "alice"}), layout


def test_configure_ssh_asks_prints_the_line_and_returns_env_updates(tmp_path):
    settings, layout = _settings(tmp_path)
    asked, said, contacts = [], [], []
    answers = {"Login node": "login1 login2", "ssh port": "2222", "ssh key": str(tmp_path / "k" / "id")}

    def ask(prompt, default, several=False):
        asked.append((prompt, default, several))
        return next((v for k, v in answers.items() if prompt.startswith(k)), default)

    def fake_contact(ssh_bin, node, user, key_path, known_hosts, remote, ssh_port, accept_new, authorized):
        contacts.append((node, user, remote, ssh_port, accept_new, known_hosts))
        return sshsetup.Contact(node, node == "login1", [])

    setup = sshsetup.configure_ssh(settings, layout, ask, said.append, ["python3", "f.pyz"],
                                   ssh_bin="/usr/bin/ssh", contact=fake_contact)
    updates, argv = setup.updates, setup.tunnel_argv
    assert setup.failures == []
    assert updates == {"FS_SSH_LOGIN_NODE": "login1 login2", "FS_SSH_USER": "alice", "FS_SSH_PORT": "2222",
                       "FS_SSH_LOCAL_PORT": "13013", "FS_SSH_KEY_PATH": str(tmp_path / "k" / "id"),
                       "FS_TRAEFIK_PORT": "13013"}
    assert argv == ["python3", "f.pyz", "tunnel"]
    assert asked[0][1] == ""  # the placeholder my-login-node is not offered as a default
    assert asked[0][2] is True and not any(a[2] for a in asked[1:])  # only the node list takes several words
    text = "\n".join(said)
    assert sshsetup.authorized_line(sshsetup.ensure_key(str(tmp_path / "k" / "id")), 13013) in text
    assert stat.S_IMODE(os.stat(str(tmp_path / "k" / "id")).st_mode) == 0o600
    kh = sshsetup.known_hosts_path(layout)
    assert [c[:5] for c in contacts] == [("login1", "alice", 13013, 2222, True), ("login2", "alice", 13013, 2222, True)]
    assert all(c[5] == kh for c in contacts)
    assert stat.S_IMODE(os.stat(os.path.dirname(kh)).st_mode) == 0o700
    assert "Traefik answers" in text and "nothing answered" in text


def test_configure_ssh_reasks_bad_answers_and_reports_a_failed_test(tmp_path):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\n" % (tmp_path / "id"))
    replies = iter(["", "", "", "99999", "", "", "", "", "yes", "no"])
    said = []

    def ask(prompt, default, several=False):
        return next(replies)

    def failing_contact(*args, **kwargs):
        raise ForeverError("login1 refused the key")

    setup = sshsetup.configure_ssh(settings, layout, ask, said.append, [], ssh_bin="ssh",
                                   contact=failing_contact)
    assert setup.updates["FS_SSH_LOGIN_NODE"] == "login1" and setup.updates["FS_TRAEFIK_PORT"] == "13013"
    assert any("99999" in s for s in said)
    assert any("The test failed: login1 refused the key" in s for s in said)
    assert any("Skipped the test" in s for s in said)
    assert setup.failures == []  # the user chose to skip after the failure


@pytest.mark.parametrize("tries, times", [(3, "3 times"), (1, "once")])
def test_configure_ssh_sums_up_a_connection_test_that_keeps_failing(tmp_path, tries, times):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=\"login1 login2\"\nFS_SSH_KEY_PATH=%s\n"
                                 % (tmp_path / "id"))
    said, calls = [], []

    def contact(ssh_bin, node, *args, **kwargs):
        calls.append(node)
        if node == "login1":
            raise ForeverError("login1 refused the key /k.\n  Add this line ...")
        return sshsetup.Contact(node, True, [])

    setup = sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default,
                                   said.append, [], ssh_bin="ssh", contact=contact, tries=tries)
    assert calls == ["login1"] * tries + ["login2"]
    assert setup.failures == ["the connection test of alice@login1 failed %s: login1 refused the key /k" % times]
    assert (tries > 1) == any("Giving up on login1 after 3 tries" in s for s in said)


def _pinning_world(tmp_path, refuse_key=False):
    """run() answering `ssh-keygen -F` from our known_hosts, and a contact that records the host key
    there first, as ssh with accept-new does (also when the login then fails)."""
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_PORT=2222\nFS_SSH_KEY_PATH=%s\n"
                                 % (tmp_path / "id"))
    looked_up = []

    def run(argv, **kwargs):
        if argv[:2] == ["ssh-keygen", "-F"]:
            looked_up.append(argv)
            found = os.path.exists(argv[-1])
            return subprocess.CompletedProcess(argv, 0 if found else 1, "# Host [login1]:2222 found: line 1 \n"
                                               "[login1]:2222 ED25519 SHA256:M1KII8f0iAYS2rx\n" if found else "", "")
        return sshsetup.proc.run(argv, **kwargs)

    def contact(ssh_bin, node, user, key_path, known_hosts, *args, **kwargs):
        with open(known_hosts, "a") as handle:
            handle.write("[login1]:2222 ssh-ed25519 AAAA\n")
        if refuse_key:
            raise ForeverError("login1 refused the key %s." % key_path)
        return sshsetup.Contact(node, True, ["Warning: Permanently added '[login1]:2222' (ED25519) to the list "
                                             "of known hosts."])
    return settings, layout, run, contact, looked_up


def test_configure_ssh_shows_the_host_key_it_pinned(tmp_path):
    settings, layout, run, contact, looked_up = _pinning_world(tmp_path)
    said = []
    sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default, said.append, [],
                           run=run, ssh_bin="ssh", contact=contact, port_holder=lambda port: "")
    assert looked_up[0][2] == "[login1]:2222" and looked_up[0][-1] == sshsetup.known_hosts_path(layout)
    assert any("Recorded the host key of login1: ED25519 SHA256:M1KII8f0iAYS2rx." in s for s in said), said


def test_a_first_contact_with_a_refused_key_still_says_which_host_key_it_pinned(tmp_path):
    """ssh (accept-new) records the host key before the login node refuses our key: that had gone unsaid,
    so the key the tunnel would trust from then on was never shown."""
    settings, layout, run, contact, _ = _pinning_world(tmp_path, refuse_key=True)
    said = []
    setup = sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default, said.append,
                                   [], run=run, ssh_bin="ssh", contact=contact, tries=1, port_holder=lambda port: "")
    assert setup.failures
    recorded = [s for s in said if "Recorded the host key of login1: ED25519 SHA256:M1KII8f0iAYS2rx." in s]
    assert len(recorded) == 1 and said.index(recorded[0]) < [i for i, s in enumerate(said) if "test failed" in s][0]


@pytest.mark.parametrize("key_exists", [False, True])
def test_ctrl_c_during_config_ssh_says_what_was_left(tmp_path, key_exists):
    key = tmp_path / "keys" / "id"
    if key_exists:
        sshsetup.ensure_key(str(key))
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\n" % key)

    def ask(prompt, default, several=False):
        if prompt.startswith("Added the line"):
            raise KeyboardInterrupt
        return default

    with pytest.raises(ConfigCancelled) as caught:
        sshsetup.configure_ssh(settings, layout, ask, lambda text: None, [], ssh_bin="ssh")
    message = str(caught.value)
    assert ".env was not changed" in message
    assert (str(key) in message and "stays" in message) == (not key_exists)
    assert key.exists()


def test_tunnel_from_settings_requires_config_ssh_first(tmp_path):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\n" % (tmp_path / "id"))
    with pytest.raises(ConfigError) as caught:
        sshsetup.tunnel_from_settings(settings, layout, ssh_bin="ssh")
    assert "config --ssh" in str(caught.value)
    (tmp_path / "id").write_text("key")
    with pytest.raises(ConfigError) as caught:
        sshsetup.tunnel_from_settings(settings, layout, ssh_bin="ssh")
    assert "known_hosts" in str(caught.value)


def test_tunnel_from_settings_builds_the_strict_argv(tmp_path):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=\"login1 login2\"\nFS_SSH_KEY_PATH=%s\n"
                                 "FS_SSH_PORT=2222\nFS_SSH_LOCAL_PORT=15015\n" % (tmp_path / "id"))
    (tmp_path / "id").write_text("key")
    kh = sshsetup.known_hosts_path(layout)
    os.makedirs(os.path.dirname(kh))
    open(kh, "w").close()
    sup = sshsetup.tunnel_from_settings(settings, layout, ssh_bin="/usr/bin/ssh")
    assert sup.nodes == ["login1", "login2"]
    argv = sup.tunnel.argv_for_node("login2")
    assert argv[-1] == "alice@login2" and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-L") + 1] == "127.0.0.1:15015:127.0.0.1:13013"
    assert "UserKnownHostsFile=%s" % kh in argv and "StrictHostKeyChecking=yes" in argv


def test_run_until_signalled_stops_on_sigterm_and_restores_the_handler():
    import signal
    world = World()
    sup = supervisor(world)
    real_sleep = world.sleep
    sent = []

    def sleep(seconds):
        real_sleep(seconds)
        if world.now >= 5 and not sent:
            sent.append(world.now)
            os.kill(os.getpid(), signal.SIGTERM)
        assert world.now < 60, "SIGTERM did not stop the supervisor"

    sup.sleep = sleep
    before = signal.getsignal(signal.SIGTERM)
    assert sshtunnel.run_until_signalled(sup) == 0
    assert sent and world.procs[0].terminated
    assert signal.getsignal(signal.SIGTERM) is before


def test_configure_ssh_explains_a_forward_refused_by_an_old_authorized_line(tmp_path):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\n" % (tmp_path / "id"))
    said = []

    def old_line_contact(*args, **kwargs):
        return sshsetup.Contact("login1", False, ["channel 1: open failed: administratively prohibited: open failed"])

    sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default, said.append, [],
                           ssh_bin="ssh", contact=old_line_contact)
    assert any("ssh logs in, but" in s and "permitopen" in s for s in said), said


def test_several_login_nodes_are_accepted_at_the_prompt_and_written_quoted(tmp_path):
    from forever_slurm.setup import configure
    typed = iter(["127.0.0.1 127.0.0.2", '"login1 login2"'])
    said = []
    prompter = configure.Prompter(lambda prompt: next(typed), said.append, interactive=True)
    assert prompter.ask("Login node(s)", "", several=True) == "127.0.0.1 127.0.0.2"
    assert prompter.ask("Login node(s)", "", several=True) == "login1 login2"
    with pytest.raises(ConfigError):  # an unclosed quote is re-asked, then refused
        configure.Prompter(lambda prompt: "a 'b", said.append, max_attempts=2).ask("Login", "", several=True)
    assert any("cannot read that" in s for s in said)
    settings, layout = _settings(tmp_path)
    configure.write_env(layout, {"FS_SSH_LOGIN_NODE": "127.0.0.1 127.0.0.2"})
    assert 'FS_SSH_LOGIN_NODE="127.0.0.1 127.0.0.2"' in (tmp_path / ".env").read_text()
    assert settings_mod.load(layout).ssh_login_nodes == ["127.0.0.1", "127.0.0.2"]


def test_uninstall_on_a_web_server_reminds_to_remove_the_authorized_keys_line(tmp_path, monkeypatch):
    from forever_slurm.setup import config_steps, units
    key = tmp_path / "k" / "id"
    pub = sshsetup.ensure_key(str(key))
    settings, layout = _settings(tmp_path, 'FS_SSH_LOGIN_NODE="login1 login2"\nFS_SSH_USER=bob\n'
                                 "FS_SSH_KEY_PATH=%s\n" % key)
    monkeypatch.setattr(units, "uninstall", lambda *args: ["forever-ssh-forward"])
    said = []
    assert config_steps.uninstall_command(None, layout, said.append) == 0
    reminder = said[-1]
    assert "authorized_keys of bob on login1 and login2" in reminder and pub.split()[1][:20] in reminder
    assert str(key) in reminder


def test_uninstall_on_a_login_node_has_no_tunnel_reminder(tmp_path, monkeypatch):
    from forever_slurm.setup import config_steps, units
    settings, layout = _settings(tmp_path)
    monkeypatch.setattr(units, "uninstall", lambda *args: [])
    said = []
    config_steps.uninstall_command(None, layout, said.append)
    assert not any("authorized_keys" in s for s in said)


def test_a_key_that_can_run_commands_fails_the_connection_test(tmp_path):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\n" % (tmp_path / "id"))
    said = []

    def contact(ssh_bin, node, *args, **kwargs):
        return sshsetup.Contact(node, True, [], runs_commands=True)

    setup = sshsetup.configure_ssh(settings, layout, lambda prompt, default, several=False: default, said.append,
                                   [], ssh_bin="ssh", contact=contact)
    assert setup.failures and "run commands" in setup.failures[0]
    assert any("not forward-only" in s for s in said)


def test_the_command_check_argv_runs_a_command_and_forwards_nothing():
    argv = sshtunnel.ssh_argv("ssh", "login1", "alice", "/k", "/kh", 0, 0, 2222, command=["echo", "x"])
    assert "-N" not in argv and "-L" not in argv
    assert argv[-3:] == ["alice@login1", "echo", "x"] and "BatchMode=yes" in argv


def test_a_refused_forward_is_not_mistaken_for_a_down_sshd():
    lines = ["channel 2: open failed: connect failed: Connection refused"]
    assert sshtunnel.diagnose(lines, "login1", "/kh", "/k") is None
    down = sshtunnel.diagnose(["ssh: connect to host login1 port 22: Connection refused"], "login1", "/kh", "/k")
    assert "its sshd is down" in down[0]


# ---------------------------------------------------------------- config --ssh: --set, the local port, the gaps

@pytest.fixture(autouse=True)
def _local_port_free(monkeypatch):
    """Whether this machine's 13013 is taken must not decide these tests (the ones about it pass their own)."""
    monkeypatch.setattr(sshsetup, "local_port_holder", lambda port, proc_root="/proc": "")


def _contact_ok(ssh_bin, node, *args, **kwargs):
    return sshsetup.Contact(node, True, [])


def test_config_ssh_takes_set_values_instead_of_asking(tmp_path):
    """--set with --ssh had been ignored (exit 0, the port unchanged)."""
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\n" % (tmp_path / "id"))
    asked, said = [], []
    setup = sshsetup.configure_ssh(settings, layout, lambda p, d, several=False: asked.append(p) or d, said.append,
                                   [], ssh_bin="ssh", contact=_contact_ok,
                                   forced={"FS_SSH_LOCAL_PORT": "14555", "FS_SSH_LOGIN_NODE": "a b"})
    assert setup.updates["FS_SSH_LOCAL_PORT"] == "14555" and setup.updates["FS_SSH_LOGIN_NODE"] == "a b"
    assert not any(p.startswith(("Local port", "Login node")) for p in asked)
    assert "FS_SSH_LOCAL_PORT=14555 (from --set)" in said
    with pytest.raises(ConfigError, match=r"--set FS_SSH_PORT=0x: "):
        sshsetup.configure_ssh(settings, layout, lambda p, d, several=False: d, said.append, [], ssh_bin="ssh",
                               contact=_contact_ok, forced={"FS_SSH_PORT": "0x"})


def test_config_ssh_set_refuses_keys_it_does_not_set_and_services(tmp_path):
    from forever_slurm.setup import config_steps
    layout = settings_mod.Layout(str(tmp_path))

    class Args:
        set, service = ["FS_SSH_LOCAL_PORT=14000"], []
    assert config_steps.ssh_overrides(Args, layout) == {"FS_SSH_LOCAL_PORT": "14000"}
    Args.set = ["FS_SLEEP_INTERVAL=5"]
    with pytest.raises(ConfigError, match="--set FS_SLEEP_INTERVAL: config --ssh sets only FS_SSH_LOGIN_NODE"):
        config_steps.ssh_overrides(Args, layout)
    Args.set, Args.service = [], ["hello-python=2"]
    with pytest.raises(ConfigError, match="services run on the login node"):
        config_steps.ssh_overrides(Args, layout)


def test_config_ssh_refuses_a_taken_local_port_or_proposes_a_free_one(tmp_path):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_KEY_PATH=%s\nFS_SSH_LOCAL_PORT=14001\n"
                                 % (tmp_path / "id"))
    holder = lambda port: "pid 77 (python3)" if port == 14001 else ""  # noqa: E731
    with pytest.raises(ConfigError) as raised:
        sshsetup.configure_ssh(settings, layout, lambda p, d, several=False: d, [].append, [], ssh_bin="ssh",
                               contact=_contact_ok, assume_yes=True, port_holder=holder)
    message = str(raised.value)
    assert "FS_SSH_LOCAL_PORT=14001: 127.0.0.1:14001 is in use by pid 77 (python3)" in message
    assert "pass --set FS_SSH_LOCAL_PORT=" in message
    said, offered = [], []

    def ask(prompt, default, several=False):
        if prompt.startswith("Local port"):
            offered.append(default)
        return default
    setup = sshsetup.configure_ssh(settings, layout, ask, said.append, [], ssh_bin="ssh", contact=_contact_ok,
                                   port_holder=holder)
    assert offered[0] == "14001" and offered[1] != "14001"
    assert setup.updates["FS_SSH_LOCAL_PORT"] == offered[1]
    assert any("is in use by pid 77 (python3)" in line for line in said)


@pytest.mark.parametrize("gaps, user, words", [
    ((sshsetup.GAP_LISTEN,), "root", "open a listener on its 127.0.0.1:1 (ssh -R)"),
    ((sshsetup.GAP_TUN,), "root", "open a tun device (ssh -w"),
    ((sshsetup.GAP_TUN_UNTESTED,), "root", "Could not test whether"),
    ((sshsetup.GAP_TUN_UNTESTED,), "alice", None),
])
def test_config_ssh_warns_about_what_the_line_cannot_refuse(tmp_path, gaps, user, words):
    settings, layout = _settings(tmp_path, "FS_SSH_LOGIN_NODE=login1\nFS_SSH_USER=%s\nFS_SSH_KEY_PATH=%s\n"
                                 % (user, tmp_path / "id"))
    said = []

    def contact(ssh_bin, node, *args, **kwargs):
        return sshsetup.Contact(node, True, [], False, gaps)
    sshsetup.configure_ssh(settings, layout, lambda p, d, several=False: d, said.append, [], ssh_bin="ssh",
                           contact=contact)
    warned = [line for line in said if line.startswith("! ")]
    if words is None:
        assert not warned
    else:
        assert len(warned) == 1 and words in warned[0]
