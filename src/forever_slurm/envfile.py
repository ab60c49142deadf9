"""Reads and updates .env files: KEY=VALUE lines with shell-style quotes, comments and ${VAR}."""

import os
import re
import shlex
from typing import NamedTuple

from .errors import ConfigError

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class EnvValue(NamedTuple):
    value: str
    path: str
    line: int


class EnvLine(NamedTuple):
    """One line of a .env file: key is None for comments and blank lines."""
    text: str
    key: object
    comment: str


def parse(text, path, environ=None, known=None):
    """Return {key: EnvValue}; ${VAR} expands from keys above, then known, then environ."""
    environ = os.environ if environ is None else environ
    values = {}
    scope = dict(environ)
    for key, val in (known or {}).items():
        scope[key] = val.value if isinstance(val, EnvValue) else val
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
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
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise ConfigError("not a text file", path)
    return parse(text, path, environ, known)


def quote(value):
    """Quote a value for a .env line so that shell and parse() read it back unchanged."""
    if value and re.match(r"^[A-Za-z0-9_./:@%+,~-]+$", value):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


def updated_text(old_text, updates, comments=None):
    """old_text with KEY= lines replaced by updates; new keys are appended (with comments)."""
    done = set()
    out = []
    for raw in old_text.splitlines():
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
    for raw in text.splitlines():
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
