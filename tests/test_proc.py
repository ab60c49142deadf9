"""proc.run: the one subprocess choke point."""

import glob
import os
import subprocess
import sys
import time

import pytest

from forever_slurm.systems import proc
from forever_slurm.common.errors import CommandError


def test_output_is_decoded_leniently():
    done = proc.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe\\r\\nend')"])
    assert done.stdout == "ok \ufffd\ufffd\nend"


def test_failure_carries_argv_code_and_stderr():
    with pytest.raises(CommandError) as info:
        proc.run([sys.executable, "-c", "import sys; sys.stderr.buffer.write(b'bad \\xff'); sys.exit(3)"])
    assert info.value.returncode == 3 and info.value.stderr == "bad \ufffd"


def test_timeout_and_missing_command_are_command_errors():
    with pytest.raises(CommandError, match="did not answer within 0.2s"):
        proc.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    with pytest.raises(CommandError, match="cannot run"):
        proc.run(["/nonexistent/command"])


def test_input_is_passed_as_text():
    assert proc.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
                    input="hello").stdout == "HELLO\n"


# A site's squeue wrapper that leaves a child holding the pipe: `squeue "$@" | logger &`-like.
HOLDS_PIPE = "echo rows; sleep 30 &"                     # exits at once, its child keeps stdout open
HANGS_WITH_CHILD = "sleep 30 & sleep 30"                 # never answers, and neither does its child

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def alive(pid):
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_command_that_exits_is_taken_at_its_word_although_its_child_holds_the_pipe():
    started = time.monotonic()
    done = proc.run(["sh", "-c", HOLDS_PIPE], timeout=10)
    assert done.stdout == "rows\n" and done.returncode == 0
    assert time.monotonic() - started < proc.EXIT_GRACE + 2


def test_the_deadline_holds_when_a_child_keeps_the_pipe_open_and_the_whole_group_is_killed(tmp_path):
    marker = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(CommandError, match="did not answer within 1.0s"):
        proc.run(["sh", "-c", "echo $$ > %s; sleep 30 & echo $! >> %s; sleep 30" % (marker, marker)],
                 timeout=1.0)
    assert time.monotonic() - started < 3
    time.sleep(0.2)
    pids = [int(p) for p in marker.read_text().split()]
    assert len(pids) == 2 and not any(alive(p) for p in pids)


def test_a_command_that_closes_its_output_but_runs_on_is_a_timeout():
    started = time.monotonic()
    with pytest.raises(CommandError, match="did not answer"):
        proc.run(["sh", "-c", "exec >&- 2>&-; sleep 30"], timeout=1.0)
    assert time.monotonic() - started < 3


def test_large_input_and_output_do_not_deadlock():
    text = "x" * 500000
    done = proc.run([sys.executable, "-c", "import sys; d = sys.stdin.read(); print(len(d)); print(d)"],
                    input=text, timeout=20)
    assert done.stdout.splitlines()[0] == "500000" and len(done.stdout) > 500000


def test_bytes_can_be_kept_for_paths():
    done = proc.run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'/tmp/j\\xf6rg')"],
                    errors="surrogateescape")
    assert os.fsencode(done.stdout) == b"/tmp/j\xf6rg" or done.stdout.encode("utf-8", "surrogateescape") == \
        b"/tmp/j\xf6rg"


PYENV = os.path.expanduser("~/.pyenv/versions")


def pythons():
    """Every python3 >= 3.6 under ~/.pyenv (3.6 is the one whose subprocess.run ignored the timeout)."""
    found = {"%d.%d" % sys.version_info[:2]: sys.executable}
    for path in sorted(glob.glob(os.path.join(PYENV, "3.*", "bin", "python3"))):
        label = ".".join(os.path.basename(os.path.dirname(os.path.dirname(path))).split(".")[:2])
        if tuple(int(x) for x in label.split(".")) >= (3, 6):
            found.setdefault(label, path)
    return sorted(found.items())


def test_there_is_a_python_3_6_to_test_on():
    assert "3.6" in dict(pythons()), "install Python 3.6 under ~/.pyenv (make provision)"


def test_the_deadline_holds_on_every_python():
    """On each Python at once (each measures its own calls, so running side by side costs nothing)."""
    script = ("import sys, time; sys.path.insert(0, %r)\n"
              "from forever_slurm.systems import proc\n"
              "from forever_slurm.common.errors import CommandError\n"
              "t = time.monotonic()\n"
              "try:\n"
              "    proc.run(['sh', '-c', %r], timeout=1.0)\n"
              "except CommandError as exc:\n"
              "    print('error', round(time.monotonic() - t, 1), exc)\n"
              "t = time.monotonic()\n"
              "done = proc.run(['sh', '-c', %r], timeout=10)\n"
              "print('done', round(time.monotonic() - t, 1), done.stdout.strip())\n"
              % (SRC, HANGS_WITH_CHILD, HOLDS_PIPE))
    running = [(label, subprocess.Popen([python, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        universal_newlines=True)) for label, python in pythons()]
    for label, child in running:
        out, err = child.communicate(timeout=60)
        lines = out.splitlines()
        assert child.returncode == 0, (label, err)
        assert lines[0].startswith("error ") and float(lines[0].split()[1]) < 2.5, (label, lines)
        assert lines[1].startswith("done ") and float(lines[1].split()[1]) < proc.EXIT_GRACE + 1.5, (label, lines)
        assert lines[1].endswith(" rows"), label


def test_a_command_that_floods_its_output_is_stopped_at_the_cap(monkeypatch):
    monkeypatch.setattr(proc, "MAX_STDOUT", 1 << 20)
    monkeypatch.setattr(proc, "MAX_STDERR", 1000)
    started = time.monotonic()
    with pytest.raises(CommandError, match="printed more than 1 MiB") as info:
        proc.run(["sh", "-c", "yes abcdefgh >&2 & yes"], timeout=20)
    assert time.monotonic() - started < 5 and len(info.value.stderr) <= 1000
