"""Reads and updates .env files: KEY=VALUE lines with shell-style quotes, comments and ${VAR}.

Trust nothing: the file is read through fsutil.read_text_file (no directory, FIFO, device or
huge file), and a line with bytes that are not UTF-8, a NUL or a control character is refused
with its line number, so what comes out is text that every later step can use.
"""

import os
import re
import unicodedata
from typing import NamedTuple

from . import fsutil
from .errors import ConfigError

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EnvValue(NamedTuple):
    value: str
    path: str
    line: int


def parse(text, path, environ=None, known=None, problems=None):
    """Return {key: EnvValue}; ${VAR} expands from keys above, then known, then environ.

    problems: a list to collect the ConfigError of each bad line into (that line is skipped and the
    rest read), so that `check` reports every problem at once; without it the first one is raised."""
    environ = os.environ if environ is None else environ
    values = {}
    scope = dict(environ)
    for key, val in (known or {}).items():
        scope[key] = val.value if isinstance(val, EnvValue) else val
    for number, raw in enumerate(lines(text), 1):
        try:
            entry = _line(raw, scope, path, number)
        except ConfigError as exc:
            if problems is None:
                raise
            problems.append(exc)
            continue
        if entry is not None:
            values[entry[0]] = EnvValue(entry[1], path, number)
            scope[entry[0]] = entry[1]
    return values


def _line(raw, scope, path, number):
    """(key, value) of one line, None for a blank or comment line; ConfigError naming the line."""
    line = raw.strip()
    _check_characters(raw, line.startswith("#"), path, number)
    if not line or line.startswith("#"):
        return None
    if line.startswith("export "):
        line = line[len("export "):].strip()
    key, sep, rest = line.partition("=")
    key = key.strip()
    if not sep or not KEY_RE.match(key):
        raise ConfigError("expected KEY=VALUE, got %r" % raw.strip(), path, number)
    return key, _value(rest, scope, path, number)


def lines(text):
    """The lines as an editor numbers them: split at \\n only (str.splitlines also splits at
    \\x1e, \\u2028 and others, which would shift line numbers and turn a comment's tail into a line)."""
    text = text[1:] if text.startswith("\ufeff") else text      # a byte-order mark some editors add
    result = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return result[:-1] if result and result[-1] == "" else result


def _check_characters(line, is_comment, path, number):
    """Comments may hold any text; a setting's line only printable characters (and tabs)."""
    if "\ufffd" in line:
        raise ConfigError("this line is not UTF-8 text; save the file as UTF-8", path, number)
    if "\x00" in line:
        raise ConfigError("this line holds a NUL byte; is this a text file?", path, number)
    if is_comment:
        return
    for char in line:
        if char != "\t" and unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise ConfigError("this line holds the control character U+%04X; remove it" % ord(char), path, number)


def _value(rest, scope, path, number):
    """The value after KEY=, read as sh reads one word: '...' is literal; "..." expands $NAME and
    ${NAME}, and a backslash in it escapes only $ ` " and itself; unquoted, a backslash escapes any
    character, and a blank ends the word (only a # comment may follow it). What sh would run or
    compute ($(...), `...`, ${NAME:-...}) is refused rather than kept as text."""
    def fail(message):
        raise ConfigError(message, path, number)
    text = rest.lstrip(" \t")
    if text.startswith("#") and text != rest:
        return ""                   # KEY= # a comment
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char in " \t":
            tail = text[i:].strip()
            if tail and not tail.startswith("#"):
                fail("a value with spaces must be quoted: %s" % rest.strip())
            break
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                fail("cannot read value: a ' is not closed")
            out.append(text[i + 1:end])
            i = end + 1
        elif char == '"':
            i = _double_quoted(text, i + 1, out, scope, fail)
        elif char == "\\":
            if i + 1 >= len(text):
                fail("cannot read value: a \\ ends the line (continued lines are not supported)")
            out.append(text[i + 1])
            i += 2
        elif char in "$`":
            i = _expanded(text, i, out, scope, fail)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _double_quoted(text, i, out, scope, fail):
    """Append the "..." that starts at text[i] (after its quote); the index after the closing quote."""
    while i < len(text):
        char = text[i]
        if char == '"':
            return i + 1
        if char == "\\" and text[i + 1:i + 2] in ("$", "`", '"', "\\"):
            out.append(text[i + 1])
            i += 2
        elif char in "$`":
            i = _expanded(text, i, out, scope, fail)
        else:
            out.append(char)
            i += 1
    fail('cannot read value: a " is not closed')


def _expanded(text, i, out, scope, fail):
    """Append what the $ or ` at text[i] stands for; the index after it. A $ before anything but a
    name or {name} is a plain $."""
    if text[i] == "`" or text.startswith("$(", i):
        fail("command substitution (`...` or $(...)) is not supported in .env: write the value itself")
    name = _NAME_RE.match(text, i + 1)
    if name:
        out.append(scope.get(name.group(0), ""))
        return name.end()
    if text.startswith("${", i):
        braced = _BRACED_RE.match(text, i + 1)
        if not braced:
            fail("only ${NAME} is supported in .env, not %s..." % text[i:i + 12])
        out.append(scope.get(braced.group(1), ""))
        return braced.end()
    out.append("$")
    return i + 1


def read(path, environ=None, known=None, problems=None):
    """parse() a file; a missing file reads as empty."""
    text = read_text(path)
    return {} if text is None else parse(text, path, environ, known, problems)


def read_text(path):
    """The text of a .env-like file, or None when it is missing; ConfigError for anything not a sane text file."""
    try:
        return fsutil.read_text_file(path, "settings file")
    except FileNotFoundError:
        return None


def quote(value):
    """Quote a value for a .env line so that shell and parse() read it back unchanged."""
    if value and re.match(r"^[A-Za-z0-9_./:@%+,~-]+$", value):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


def updated_text(old_text, updates, comments=None):
    """old_text with KEY= lines replaced by updates; new keys are appended (with comments)."""
    done = set()
    out = []
    for raw in lines(old_text):
        line = raw.strip()
        body = line[len("export "):] if line.startswith("export ") else line
        key = body.partition("=")[0].strip()
        if "=" in body and key in updates and not line.startswith("#"):
            if key not in done:
                out.append("%s=%s" % (key, quote(updates[key])))
                done.add(key)
            continue
        out.append(raw)
    for key, value in updates.items():
        if key not in done:
            for comment in (comments or {}).get(key, []):
                out.append(comment)
            out.append("%s=%s" % (key, quote(value)))
    return "\n".join(out) + "\n"


def comments_by_key(text):
    """{key: [comment lines just above it]} for prompting with the help text of .env.default."""
    result = {}
    pending = []
    for raw in lines(text):
        line = raw.strip()
        if line.startswith("#"):
            pending.append(raw)
        elif not line:
            pending = []
        else:
            key = line.partition("=")[0].replace("export ", "").strip()
            result[key] = pending
            pending = []
    return result
