"""Reads and updates .env files: KEY=VALUE lines with shell-style quotes, comments and ${VAR}.

Trust nothing: the file is read through fsutil.read_text_file (no directory, FIFO, device or
huge file), and a line with bytes that are not UTF-8, a NUL or a control character is refused
with its line number, so what comes out is text that every later step can use.
"""

import os
import re
import shlex
import unicodedata
from typing import NamedTuple

from . import fsutil
from .errors import ConfigError

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class EnvValue(NamedTuple):
    value: str
    path: str
    line: int


def parse(text, path, environ=None, known=None):
    """Return {key: EnvValue}; ${VAR} expands from keys above, then known, then environ."""
    environ = os.environ if environ is None else environ
    values = {}
    scope = dict(environ)
    for key, val in (known or {}).items():
        scope[key] = val.value if isinstance(val, EnvValue) else val
    for number, raw in enumerate(lines(text), 1):
        line = raw.strip()
        _check_characters(raw, line.startswith("#"), path, number)
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not KEY_RE.match(key):
            raise ConfigError("expected KEY=VALUE, got %r" % raw.strip(), path, number)
        value = _value(rest, scope, path, number)
        values[key] = EnvValue(value, path, number)
        scope[key] = value
    return values


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
    if not rest.strip().startswith("'"):
        rest = VAR_RE.sub(lambda m: scope.get(m.group(1) or m.group(2), ""), rest)
    try:
        words = shlex.split(rest, comments=True)
    except ValueError as exc:
        raise ConfigError("cannot read value: %s" % exc, path, number)
    if len(words) > 1:
        raise ConfigError("a value with spaces must be quoted: %s" % rest.strip(), path, number)
    return words[0] if words else ""


def read(path, environ=None, known=None):
    """parse() a file; a missing file reads as empty."""
    text = read_text(path)
    return {} if text is None else parse(text, path, environ, known)


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
