"""proc.run: the one subprocess choke point."""

import sys

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
