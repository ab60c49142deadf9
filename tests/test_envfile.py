"""Tests for the .env reader: what enters is checked where it enters, with the file and line."""

import os
import random
import signal

import pytest

from forever_slurm.common import envfile, fsutil
from forever_slurm.common.errors import ConfigError


@pytest.fixture
def no_hang():
    """Fail instead of blocking forever (a FIFO opened the naive way waits for a writer)."""
    def alarm(*args):
        raise AssertionError("the reader blocked")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def env_at(tmp_path, data):
    path = tmp_path / ".env"
    path.write_bytes(data)
    return str(path)


def refused(path):
    with pytest.raises(ConfigError) as caught:
        envfile.read(path, environ={})
    return caught.value


def test_a_plain_file_reads_with_quotes_comments_and_variables(tmp_path):
    path = env_at(tmp_path, b'# c\nA=1\nexport B="two words" # note\nC=${A}x\nD=\'$A\'\n')
    values = envfile.read(path, environ={})
    assert {k: v.value for k, v in values.items()} == {"A": "1", "B": "two words", "C": "1x", "D": "$A"}
    assert (values["C"].path, values["C"].line) == (path, 4)


def test_a_missing_file_reads_as_empty(tmp_path):
    assert envfile.read(str(tmp_path / "nothing"), environ={}) == {}
    assert envfile.read_text(str(tmp_path / "nothing")) is None


@pytest.mark.parametrize("data,line,words", [
    (b"A=1\nB=caf\xe9\n", 2, "not UTF-8"),
    (b"A=1\n# caf\xe9 in a comment\nB=\xff\xfe\n", 2, "not UTF-8"),
    (b"A=1\nB=x\x00y\n", 2, "NUL"),
    (b"\x00\x00\x00\x00", 1, "NUL"),
    (b"A=1\n\nB=x\x1ey\n", 3, "U+001E"),
    (b"A=1\nB=x\x1b[31m\n", 2, "U+001B"),
    (b"A=1\nB=x\rC=2\n", 2, "U+000D"),
    ("A=1\nB=x\u2028C=2\n".encode("utf-8"), 2, "U+2028"),
    ("A=1\nB=\u200bx\n".encode("utf-8"), 2, "U+200B"),
    (b"A=1\nthis is not a setting\n", 2, "expected KEY=VALUE"),
    (b"A=1\nB='unclosed\n", 2, "cannot read value"),
    (b"A=1\nB=two words\n", 2, "must be quoted"),
])
def test_bad_bytes_are_refused_with_file_and_line(tmp_path, data, line, words):
    path = env_at(tmp_path, data)
    error = refused(path)
    assert (error.path, error.line) == (path, line)
    assert words in str(error) and str(error).startswith("%s:%d: " % (path, line))


def test_a_directory_in_place_of_env_is_refused(tmp_path):
    path = tmp_path / ".env"
    path.mkdir()
    error = refused(str(path))
    assert error.path == str(path) and "directory" in str(error)


def test_a_fifo_in_place_of_env_is_refused_without_blocking(tmp_path, no_hang):
    path = str(tmp_path / ".env")
    os.mkfifo(path)
    error = refused(path)
    assert error.path == path and "FIFO" in str(error)


def test_a_huge_env_is_refused_without_reading_it(tmp_path):
    path = tmp_path / ".env"
    with open(str(path), "wb") as handle:
        handle.truncate(fsutil.MAX_TEXT_BYTES * 50)    # sparse: large, but costs no disk
    error = refused(str(path))
    assert error.path == str(path) and "refusing to read it" in str(error)


def test_crlf_and_a_byte_order_mark_read_as_plain_lines(tmp_path):
    path = env_at(tmp_path, b"\xef\xbb\xbfA=1\r\n# c\r\nB=2\r\n")
    values = envfile.read(path, environ={})
    assert (values["A"].value, values["B"].value, values["B"].line) == ("1", "2", 3)


def test_line_numbers_are_the_editors_even_with_unicode_separators_in_comments():
    text = "# a\x1c b\u2028 c\x85\nA=1\n# \x0c\nB=2\n"
    values = envfile.parse(text, "f", environ={})
    assert (values["A"].line, values["B"].line) == (2, 4)
    assert len(text.splitlines()) > 4         # what a naive reader would have numbered


def test_updating_never_turns_a_comment_tail_into_a_setting():
    text = "# note\u2028FS_TRAEFIK_BIND=0.0.0.0\nFS_SURGE=1\n"
    new = envfile.updated_text(text, {"FS_SURGE": "2"})
    values = envfile.parse(new, "f", environ={})
    assert "FS_TRAEFIK_BIND" not in values and values["FS_SURGE"].value == "2"
    assert new.startswith("# note\u2028FS_TRAEFIK_BIND=0.0.0.0\n")


def test_envline_is_gone():
    assert not hasattr(envfile, "EnvLine")


def test_random_garbage_is_read_or_refused_with_its_line(tmp_path):
    """Random bytes in a value: a value comes out, or one ConfigError naming .env and that line."""
    rng = random.Random(1312)
    pieces = [b"a", b"1", b" ", b"'", b'"', b"\\", b"$", b"${", b"}", b"#", b"=", b"\t", b"\x00", b"\x1e",
              b"\xff", b"\xc3\xa9", b"\xe2\x80\xa8", b"\r", b"export ", b"\xd9\xa1"]
    path = str(tmp_path / ".env")
    outcomes = {"read": 0, "refused": 0}
    for _ in range(2000):
        junk = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        line = rng.randint(1, 4)
        data = b"A=1\n" * (line - 1) + b"KEY=" + junk + b"\nZ=9\n"
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            values = envfile.read(path, environ={})
        except ConfigError as exc:
            outcomes["refused"] += 1
            assert exc.path == path and exc.line == line, (junk, str(exc))
            continue
        outcomes["read"] += 1
        value = values["KEY"].value
        assert isinstance(value, str) and "\x00" not in value and "\ufffd" not in value, junk
        assert values["Z"].line == line + 1
    assert outcomes["read"] > 100 and outcomes["refused"] > 100, outcomes


def test_values_read_as_the_shell_reads_them():
    """Differential: every value the reader accepts, /bin/sh (POSIX) assigns the same way."""
    import re
    import subprocess
    rng = random.Random(7)
    pieces = ["a", "1", " ", "'", '"', "\\", "$", "$A", "${A}", "${B}x", "}", "{", "#", "=", "é", "\\$", "\\\"",
              "\\\\", "/", ":", "-", "~", "%", "@", "+", ",", "."]
    cases = []
    for _ in range(3000):
        junk = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        if re.search(r"\$(?![A-Za-z_{]|$)", junk) or junk[:1] == " ":
            # $1, $$, $? ... are sh's special parameters, not a .env's business; and KEY= value, which
            # sh reads as a command to run, is read leniently as the value.
            continue
        try:
            value = envfile.parse("A=1\nB=2\nKEY=%s\n" % junk, ".env", environ={})["KEY"].value
        except ConfigError:
            continue
        cases.append((junk, value))
    assert len(cases) > 500
    script = "".join("A=1; B=2\nKEY=%s\nprintf '%%s\\0' \"$KEY\"\n" % junk for junk, _ in cases)
    done = subprocess.run(["sh", "-c", script], stdout=subprocess.PIPE, env={"PATH": os.environ["PATH"]},
                          check=True)
    from_shell = done.stdout.decode("utf-8").split("\0")[:-1]
    for (junk, value), shell_value in zip(cases, from_shell):
        assert value == shell_value, junk
    assert len(from_shell) == len(cases)


@pytest.mark.parametrize("value", ["/opt/tr$x/traefik", "~/.ssh/key`1`", "a$FOO", "price $5", "\\$", 'say "hi"',
                                   "tab\there", "#not a comment", "a#b", "${A}", "", "'", "\\"])
def test_quote_reads_back_unchanged(value):
    line = "KEY=%s\n" % envfile.quote(value)
    assert envfile.parse(line, ".env", environ={"FOO": "zzz", "A": "1"})["KEY"].value == value


@pytest.mark.parametrize("text, words", [
    ("KEY=$(hostname)\n", "command substitution"), ("KEY=`hostname`\n", "command substitution"),
    ('KEY="${A:-x}"\n', "only ${NAME}"), ("KEY=a\\\n", "ends the line"), ("KEY='open\n", "not closed"),
    ("KEY=two words\n", "must be quoted"),
])
def test_what_the_shell_would_run_or_compute_is_refused_with_the_line(text, words):
    with pytest.raises(ConfigError) as caught:
        envfile.parse("A=1\n" + text, ".env", environ={})
    assert words in caught.value.message and caught.value.line == 2
