"""accesslog: figures from Traefik's JSON access log, read from its tail; size-based rotation with USR1."""

import calendar
import datetime
import io
import json
import os
import random
import signal
import time

import pytest

from forever_slurm.observe import accesslog
from forever_slurm.systems import traefik_logs

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0, 0, 0, 0)) + 0.25


def stamp(epoch):
    """StartUTC as Traefik 3 writes it: nanoseconds and 'Z'."""
    whole = int(epoch)
    nanos = int(round((epoch - whole) * 1e9))
    return datetime.datetime.utcfromtimestamp(whole).strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % nanos


def line(started, service="hello-python", status=200, duration_ns=1500000, path=None, router=True,
         service_name=True, server="http://node01:41234"):
    """One access-log line with Traefik 3's keys (defaultMode keep, the fields render_static keeps and more)."""
    entry = {
        "ClientAddr": "127.0.0.1:50412", "ClientHost": "127.0.0.1", "ClientPort": "50412", "ClientUsername": "-",
        "DownstreamContentSize": 12, "DownstreamStatus": status, "Duration": duration_ns,
        "OriginContentSize": 12, "OriginDuration": max(0, duration_ns - 80000),
        "OriginStatus": status if service_name else 0, "Overhead": 80000,
        "RequestAddr": "127.0.0.1:13013", "RequestContentSize": 0, "RequestCount": 7,
        "RequestHost": "127.0.0.1", "RequestMethod": "GET", "RequestPath": path or "/%s/api" % service,
        "RequestPort": "13013", "RequestProtocol": "HTTP/1.1", "RequestScheme": "http", "RetryAttempts": 0,
        "StartLocal": stamp(started)[:-1] + "+00:00", "StartUTC": stamp(started), "entryPointName": "web",
        "level": "info", "msg": "", "time": stamp(started)[:19] + "Z",
    }
    if router:
        entry["RouterName"] = service + "-router@file"
    if service_name:
        entry["ServiceName"] = service + "@file"
        entry["ServiceURL"] = server
    else:
        del entry["OriginContentSize"]
    return json.dumps(entry, sort_keys=True) + "\n"


def write(path, lines):
    with open(str(path), "w") as handle:
        handle.writelines(lines)
    return str(path)


def expected_percentile(values, fraction):
    """Closest-rank linear interpolation, written independently of the module (numpy's default)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    below = ordered[int(position)]
    above = ordered[min(int(position) + 1, len(ordered) - 1)]
    return below + (above - below) * (position - int(position))


# -- parse_time ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2026-11-29T12:00:00.123456789Z", NOW - 0.25 + 0.123456789),
    ("2026-11-29T12:00:00Z", NOW - 0.25),
    ("2026-11-29T14:00:00.5+02:00", NOW - 0.25 + 0.5),
    ("2026-11-29T07:30:00-04:30", NOW - 0.25),
    ("2026-11-29T12:00:00.000000001z", NOW - 0.25 + 1e-9),
    ("2026-11-29 12:00:00", NOW - 0.25),
])
def test_parse_time_reads_rfc3339_with_nanoseconds_and_offsets(text, expected):
    assert accesslog.parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-29T25:00:00Z", None, 17,
                                  "2026-11-29T12:00:00+0x:00"])
def test_parse_time_returns_none_for_what_is_not_a_time(text):
    assert accesslog.parse_time(text) is None


def test_parse_time_agrees_with_datetime_on_traefik_stamps():
    for offset in (0.0, 0.000001, 59.999999, 86399.5, 3.0e7):
        epoch = 1.7e9 + offset
        assert accesslog.parse_time(stamp(epoch)) == pytest.approx(epoch, abs=1e-6)


# -- summary ---------------------------------------------------------------------------------------

def test_summary_counts_share_of_5xx_and_percentiles_per_service(tmp_path):
    rng = random.Random(8)
    lines, durations, statuses = [], {"hello-python": [], "vllm": []}, {"hello-python": [], "vllm": []}
    for index in range(200):
        service = "hello-python" if index % 3 else "vllm"
        status = rng.choice([200] * 17 + [502, 503, 404])
        duration = rng.randint(200000, 900000000)
        started = NOW - 290 + index
        lines.append(line(started, service, status, duration))
        durations[service].append(duration / 1e6)
        statuses[service].append(status)
    path = write(tmp_path / "traefik-access.log", lines)

    result = accesslog.summary(path, NOW + 0.0, window=300.0)

    assert result["window_seconds"] == 300.0
    assert set(result["services"]) == {"hello-python", "vllm"}
    for service, figures in result["services"].items():
        assert figures["requests"] == len(statuses[service])
        assert figures["share_5xx"] == pytest.approx(sum(s >= 500 for s in statuses[service]) / len(statuses[service]))
        assert figures["p50_ms"] == pytest.approx(expected_percentile(durations[service], 0.5))
        assert figures["p95_ms"] == pytest.approx(expected_percentile(durations[service], 0.95))
    assert result["skipped"] == 0


def test_percentiles_on_a_small_known_set(tmp_path):
    # 1..10 ms: median 5.5 ms; p95 at rank 8.55 of 0..9 -> 9 + 0.55 = 9.55 ms.
    path = write(tmp_path / "a.log", [line(NOW - 10 - i, duration_ns=(i + 1) * 1000000) for i in range(10)])
    figures = accesslog.summary(path, NOW)["services"]["hello-python"]
    assert figures["p50_ms"] == pytest.approx(5.5)
    assert figures["p95_ms"] == pytest.approx(9.55)
    assert figures["requests"] == 10
    assert figures["share_5xx"] == 0.0


def test_a_503_with_no_server_counts_for_its_router_and_unrouted_requests_for_their_path(tmp_path):
    path = write(tmp_path / "a.log", [
        line(NOW - 5, "vllm", 503, 50000, service_name=False),          # empty loadBalancer: RouterName only
        line(NOW - 4, "vllm", 200),
        line(NOW - 3, "nothing", 404, 40000, path="/nothing/here?x=1", router=False, service_name=False),
    ])
    services = accesslog.summary(path, NOW)["services"]
    assert services["vllm"]["requests"] == 2
    assert services["vllm"]["share_5xx"] == 0.5
    assert services["nothing"]["requests"] == 1
    assert services["nothing"]["share_5xx"] == 0.0


def test_traefik_internal_services_are_not_counted(tmp_path):
    ping = json.loads(line(NOW - 2, "ping"))
    ping["ServiceName"], ping["RouterName"] = "ping@internal", "ping@internal"
    path = write(tmp_path / "a.log", [json.dumps(ping) + "\n", line(NOW - 1)])
    assert set(accesslog.summary(path, NOW)["services"]) == {"hello-python"}


def test_window_excludes_old_and_future_lines(tmp_path):
    lines = [line(NOW - 3600 + i, "old") for i in range(100)]          # an hour ago
    lines += [line(NOW - 301, "edge"), line(NOW - 299, "edge")]
    lines += [line(NOW - 60, "hello-python", 500), line(NOW - 30)]
    lines += [line(NOW + 30, "future")]
    path = write(tmp_path / "a.log", lines)
    result = accesslog.summary(path, NOW, window=300.0)
    assert set(result["services"]) == {"edge", "hello-python"}
    assert result["services"]["edge"]["requests"] == 1
    assert result["services"]["hello-python"]["requests"] == 2
    assert result["services"]["hello-python"]["share_5xx"] == 0.5
    assert result["complete"] is True
    assert result["covered_seconds"] == 300.0
    assert accesslog.summary(path, NOW, window=10.0)["services"] == {}


def test_a_long_request_that_started_in_the_window_is_found_behind_older_lines(tmp_path):
    # Lines are written when requests END: a 2-minute request that started 250 s ago is logged after
    # short requests that started (and ended) before the window.
    lines = [line(NOW - 400 + i * 0.5, "short") for i in range(180)]
    lines.append(line(NOW - 250, "long", duration_ns=120 * 10 ** 9))
    lines += [line(NOW - 320 + i * 0.1, "short") for i in range(50)]  # ended just before the window
    path = write(tmp_path / "a.log", lines)
    services = accesslog.summary(path, NOW)["services"]
    assert services["long"]["requests"] == 1
    assert services["long"]["p50_ms"] == pytest.approx(120000.0)
    assert "short" not in services


def test_garbage_lines_are_skipped_and_counted(tmp_path):
    no_time = json.loads(line(NOW - 1))
    del no_time["StartUTC"]
    lines = [
        "not json at all\n", "\n", "   \n", "[1, 2, 3]\n", "\"a string\"\n", '{"DownstreamStatus": 200\n',
        json.dumps(no_time) + "\n", line(NOW - 2, status=503), line(NOW - 1),
    ]
    path = write(tmp_path / "a.log", lines)
    with open(path, "ab") as handle:
        handle.write(b"\xff\xfe binary \x00 junk\n")
        handle.write(line(NOW - 0.5).encode()[:40])                 # being written: no newline yet
    result = accesslog.summary(path, NOW)
    assert result["services"]["hello-python"]["requests"] == 2
    assert result["services"]["hello-python"]["share_5xx"] == 0.5
    assert result["skipped"] == 7


def test_missing_log_gives_none_and_empty_log_no_services(tmp_path):
    assert accesslog.summary(str(tmp_path / "absent.log"), NOW) is None
    empty = write(tmp_path / "empty.log", [])
    assert accesslog.summary(empty, NOW) == {"window_seconds": 300.0, "services": {}, "complete": False,
                                             "covered_seconds": 0.0, "skipped": 0}


def test_freshly_rotated_log_reports_what_it_holds_and_says_it_is_incomplete(tmp_path):
    write(tmp_path / "traefik-access.log.1", [line(NOW - 200 + i) for i in range(100)])
    path = write(tmp_path / "traefik-access.log", [line(NOW - 20 + i) for i in range(5)])
    result = accesslog.summary(path, NOW)
    assert result["services"]["hello-python"]["requests"] == 5
    assert result["complete"] is False
    assert result["covered_seconds"] == pytest.approx(20.0)


def test_huge_log_is_summarised_from_its_tail_only(tmp_path):
    path = str(tmp_path / "traefik-access.log")
    old = line(NOW - 7200, "old-service", 500, 9 * 10 ** 9)
    with open(path, "w") as handle:
        block = old * 1000
        while handle.tell() < 50 * 1024 * 1024:
            handle.write(block)
        recent = [line(NOW - 240 + i * 0.5, "hello-python", 502 if i % 10 == 0 else 200, (i + 1) * 100000)
                  for i in range(400)]
        handle.writelines(recent)
    assert os.path.getsize(path) > 50 * 1024 * 1024

    started = time.monotonic()
    result = accesslog.summary(path, NOW)
    elapsed = time.monotonic() - started

    print("\nsummary of a %.0f MB log: %.3f s" % (os.path.getsize(path) / 2.0 ** 20, elapsed))
    assert elapsed < 1.0
    assert set(result["services"]) == {"hello-python"}
    figures = result["services"]["hello-python"]
    assert figures["requests"] == 400
    assert figures["share_5xx"] == pytest.approx(0.1)
    durations = [(i + 1) * 0.1 for i in range(400)]
    assert figures["p50_ms"] == pytest.approx(expected_percentile(durations, 0.5))
    assert figures["p95_ms"] == pytest.approx(expected_percentile(durations, 0.95))
    assert result["complete"] is True


def test_max_bytes_bounds_the_read_and_drops_the_partial_first_line(tmp_path):
    lines = [line(NOW - 100 + i * 0.01) for i in range(5000)]        # all inside the window
    path = write(tmp_path / "a.log", lines)
    max_bytes = 100000
    size = os.path.getsize(path)
    # The lines wholly inside the last max_bytes: the first one there is cut, so it is not counted.
    whole, used = 0, 0
    for text in reversed(lines):
        used += len(text)
        if used > max_bytes:
            break
        whole += 1
    assert 0 < whole < len(lines) and size > max_bytes
    result = accesslog.summary(path, NOW, max_bytes=max_bytes)
    assert result["services"]["hello-python"]["requests"] == whole
    assert result["skipped"] == 0
    assert result["complete"] is False
    covered = 100 - (len(lines) - whole) * 0.01                          # start of the oldest line counted
    assert result["covered_seconds"] == pytest.approx(covered, abs=1e-3)


@pytest.mark.parametrize("block", [1, 2, 7, 64, 4096])
def test_lines_backwards_across_block_boundaries(block):
    data = b"first\nsecond line\n\nthird\nlast-no-newline"
    got = list(accesslog._lines_backwards(io.BytesIO(data), 1000, block=block))
    assert got == [b"last-no-newline", b"third", b"", b"second line", b"first"]
    # A range starting mid-line drops that line; starting right after a newline keeps it.
    assert list(accesslog._lines_backwards(io.BytesIO(data), len(data) - 3, block=block))[-1] == b"second line"
    assert list(accesslog._lines_backwards(io.BytesIO(data), len(data) - 6, block=block))[-1] == b"second line"


# -- rotate_if_large -------------------------------------------------------------------------------

class FakeKill:
    def __init__(self, error=None):
        self.calls = []
        self.error = error

    def __call__(self, pid, sig):
        self.calls.append((pid, sig))
        if self.error:
            raise self.error


@pytest.fixture
def fake_proc(tmp_path):
    """A /proc look-alike where pid 4242 runs traefik and pid 4343 runs something else."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "4242").mkdir()
    (proc / "4242" / "cmdline").write_bytes(b"/home/u/.work/bin/traefik\x00--configFile=x\x00")
    (proc / "4343").mkdir()
    (proc / "4343" / "cmdline").write_bytes(b"python3\x00my_notebook.py\x00")
    return str(proc)


def test_rotation_shifts_old_files_and_signals_traefik(tmp_path, fake_proc):
    log = tmp_path / "traefik-access.log"
    log.write_text("x" * 2000)
    (tmp_path / "traefik-access.log.1").write_text("one")
    (tmp_path / "traefik-access.log.2").write_text("two")
    (tmp_path / "traefik-access.log.3").write_text("three")
    small = tmp_path / "other.log"
    small.write_text("y" * 10)
    pid_file = tmp_path / "traefik.pid"
    pid_file.write_text("4242\n")
    kill = FakeKill()

    rotated = traefik_logs.rotate_if_large([str(log), str(small), str(tmp_path / "absent.log")], str(pid_file),
                                        max_bytes=1000, keep=3, kill=kill, proc=fake_proc)

    assert rotated == [str(log)]
    assert log.read_text() == "" and (log.stat().st_mode & 0o777) == 0o600     # a private empty one for Traefik
    assert (tmp_path / "traefik-access.log.1").read_text() == "x" * 2000
    assert (tmp_path / "traefik-access.log.2").read_text() == "one"
    assert (tmp_path / "traefik-access.log.3").read_text() == "two"      # "three" was the oldest: dropped
    assert not (tmp_path / "traefik-access.log.4").exists()
    assert small.read_text() == "y" * 10
    assert kill.calls == [(4242, signal.SIGUSR1)]


def test_nothing_to_rotate_sends_no_signal(tmp_path, fake_proc):
    log = tmp_path / "a.log"
    log.write_text("z" * 1000)
    pid_file = tmp_path / "traefik.pid"
    pid_file.write_text("4242")
    kill = FakeKill()
    assert traefik_logs.rotate_if_large([str(log)], str(pid_file), max_bytes=1000, kill=kill, proc=fake_proc) == []
    assert kill.calls == []
    assert log.read_text() == "z" * 1000


@pytest.mark.parametrize("pid_text, expect_signal", [
    (None, False),            # no pid file: Traefik not started by us
    ("", False),
    ("garbage", False),
    ("4343", False),          # pid reused by another program: USR1 would kill it
    ("9999", False),          # no such process
    ("4242", True),
])
def test_pid_file_problems_are_tolerated(tmp_path, fake_proc, pid_text, expect_signal):
    log = tmp_path / "a.log"
    log.write_text("z" * 100)
    pid_file = tmp_path / "traefik.pid"
    if pid_text is not None:
        pid_file.write_text(pid_text)
    kill = FakeKill()
    assert traefik_logs.rotate_if_large([str(log)], str(pid_file), max_bytes=10, kill=kill,
                                     proc=fake_proc) == [str(log)]
    assert (tmp_path / "a.log.1").exists()
    assert kill.calls == ([(4242, signal.SIGUSR1)] if expect_signal else [])


def test_a_process_gone_between_check_and_signal_is_tolerated(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("z" * 100)
    pid_file = tmp_path / "traefik.pid"
    pid_file.write_text("4242")
    kill = FakeKill(ProcessLookupError(3, "No such process"))
    assert traefik_logs.rotate_if_large([str(log)], str(pid_file), max_bytes=10, kill=kill, proc=None) == [str(log)]
    assert kill.calls == [(4242, signal.SIGUSR1)]


def test_keep_one_overwrites_the_previous_rotation(tmp_path):
    log = tmp_path / "a.log"
    (tmp_path / "a.log.1").write_text("previous")
    log.write_text("current" * 10)
    kill = FakeKill()
    traefik_logs.rotate_if_large([str(log)], str(tmp_path / "none.pid"), max_bytes=10, keep=1, kill=kill)
    assert (tmp_path / "a.log.1").read_text() == "current" * 10
    assert not (tmp_path / "a.log.2").exists()
    assert kill.calls == []


def test_follower_gives_only_new_complete_lines_and_survives_rotation(tmp_path):
    path = tmp_path / "access.log"
    path.write_text('{"ServiceName": "old@file"}\n')
    follower = traefik_logs.Follower(str(path))
    assert follower.new_entries() == [], "history before the first call is not new"
    with open(str(path), "a") as handle:
        handle.write('{"ServiceName": "a@file"}\nnot json\n[1]\n{"ServiceName": "b@fi')
    assert [e["ServiceName"] for e in follower.new_entries()] == ["a@file"]
    with open(str(path), "a") as handle:
        handle.write('le"}\n')
    assert [e["ServiceName"] for e in follower.new_entries()] == ["b@file"], "a half line waits for its end"
    assert follower.new_entries() == []
    os.rename(str(path), str(tmp_path / "access.log.1"))
    path.write_text('{"ServiceName": "c@file"}\n')
    assert [e["ServiceName"] for e in follower.new_entries()] == ["c@file"], "a rotated log is read from its start"


def test_follower_without_a_log_or_on_a_fifo_gives_nothing(tmp_path):
    assert traefik_logs.Follower(str(tmp_path / "none")).new_entries() == []
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    assert traefik_logs.Follower(str(fifo)).new_entries() == []


def test_follower_reads_at_most_max_bytes_a_call(tmp_path):
    path = tmp_path / "access.log"
    path.write_text("")
    follower = traefik_logs.Follower(str(path), max_bytes=100)
    follower.new_entries()
    path.write_text('{"n": 1}\n' * 50)
    counts = [len(follower.new_entries()) for _ in range(8)]
    assert sum(counts) == 50 and max(counts) <= 12
