"""Reads the small YAML subset of Traefik service templates (with line numbers) and writes deterministic YAML.

Supported on input: block mappings and sequences, `- key: value` items, plain, 'single' and
"double" quoted scalars, ints, floats, bools, null, `# comments`, one-line flow collections
(`[a, "b"]`, `{k: v}`, `{}`, `[]`) and one leading `---`.  Everything else (tabs in
indentation, anchors, aliases, tags, block scalars, several documents, duplicate keys, bad
indentation) raises ConfigError naming the file and line, because a template we half-read
would become a Traefik file that freezes every service.
"""

import json
import math
import re
from typing import Dict, NamedTuple, Tuple

from ..common.errors import ConfigError

_INT_RE = re.compile(r"^[-+]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z|^[-+]?[0-9]+[eE][-+]?[0-9]+\Z")
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")
_NULL = ("null", "Null", "NULL", "~")
_SAFE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\Z")
# Words other YAML readers (1.1) take as bools or null, so a key spelled like this gets quotes.
_AMBIGUOUS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
            "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
            "_": "\xa0", "L": "\u2028", "P": "\u2029"}
_HEX_LEN = {"x": 2, "u": 4, "U": 8}


class Document(NamedTuple):
    """A loaded file: its data, and the line where each key path (tuple of keys/indexes) starts."""
    data: dict
    lines: Dict[Tuple, int]
    path: str


def line_of(lines, keys):
    """Line of the deepest known prefix of `keys` in a Document's `lines`, so a message can always name a
    line (or None)."""
    keys = tuple(keys)
    while keys:
        if keys in lines:
            return lines[keys]
        keys = keys[:-1]
    return None


MAX_DEPTH = 40       # Traefik's deepest key is 6 levels down; deeper nesting is a mistake, or an attack
MAX_INT_DIGITS = 64  # a longer run of digits stays text (int() of 4,301 digits raises since Python 3.11)


def parse(text, path):
    """The Document of `text`: its data and the line of every key and item; ConfigError(path, line)
    for anything outside the subset."""
    reader = _Reader(_lines(text, path), path)
    try:
        data = reader.document()
    except (ValueError, OverflowError, RecursionError) as exc:
        # Only a case this reader missed gets here: still one message with the file and line.
        line = reader.lines[min(reader.pos, len(reader.lines) - 1)].number if reader.lines else None
        raise ConfigError("cannot read this line (%s)" % str(exc)[:200], path, line)
    return Document(data, reader.key_lines, path)


class _Line(NamedTuple):
    number: int
    indent: int
    text: str   # the line without its indentation and trailing blanks; comments still in it


def _lines(text, path):
    """Meaningful lines; blank and comment-only lines dropped; tabs in indentation rejected."""
    result = []
    seen_content = False
    if text.startswith("\ufeff"):
        text = text[1:]
    # split("\n"), not splitlines(): the latter also breaks on \f, \x1c, U+2028..., and line numbers
    # must match what an editor shows.
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.rstrip("\r").lstrip(" ")
        indent = len(raw) - len(raw.lstrip(" "))
        body = stripped.rstrip()
        if stripped.startswith("\t") and body.strip():
            raise ConfigError("a tab is used for indentation; indent with spaces only", path, number)
        if not body or body.startswith("#"):
            continue
        if indent == 0 and (body == "---" or body.startswith("--- ")):
            if seen_content:
                raise ConfigError("a second YAML document ('---') is not supported; keep one document per file",
                                  path, number)
            rest = body[3:].strip()
            if rest and not rest.startswith("#"):
                raise ConfigError("put the content on the line after '---'", path, number)
            seen_content = True
            continue
        if indent == 0 and (body == "..." or body.startswith("... ")):
            raise ConfigError("'...' (end of document) is not supported; remove it", path, number)
        if indent == 0 and body.startswith("%"):
            raise ConfigError("YAML directives (%...) are not supported; remove this line", path, number)
        seen_content = True
        result.append(_Line(number, indent, body))
    return result


class _Reader:
    def __init__(self, lines, path):
        self.lines = lines
        self.path = path
        self.pos = 0
        self.key_lines = {}

    def fail(self, message, number):
        raise ConfigError(message, self.path, number)

    def document(self):
        if not self.lines:
            return {}
        first = self.lines[0]
        if first.indent != 0:
            self.fail("the first line must not be indented", first.number)
        if _is_item(first.text) or _split_key(first.text, self.path, first.number) is None:
            self.fail("the file must be a mapping (key: value lines), like 'http:'", first.number)
        data = self.block(0, ())
        if self.pos < len(self.lines):
            line = self.lines[self.pos]
            self.fail("bad indentation: this line is indented more than the block it belongs to", line.number)
        return data

    def block(self, indent, keys):
        line = self.lines[self.pos]
        if len(keys) > MAX_DEPTH:
            self.fail("nested more than %d levels deep" % MAX_DEPTH, line.number)
        if _is_item(line.text):
            return self.sequence(indent, keys)
        return self.mapping(indent, keys)

    def mapping(self, indent, keys):
        result = {}
        first_lines = {}
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if line.indent < indent:
                break
            if line.indent > indent:
                self.fail("bad indentation: expected %d spaces here, found %d (a value continued on the next "
                          "line is not supported either)" % (indent, line.indent), line.number)
            if _is_item(line.text):
                self.fail("a '- ' list item where a 'key: value' line was expected; check the indentation",
                          line.number)
            split = _split_key(line.text, self.path, line.number)
            if split is None:
                self.fail("expected 'key: value'; a value continued on another line is not supported, "
                          "put it on one line in quotes", line.number)
            key, rest = split
            if key in result:
                self.fail("duplicate key %r (first on line %d); keep only one" % (key, first_lines[key]),
                          line.number)
            first_lines[key] = line.number
            path = keys + (key,)
            self.key_lines[path] = line.number
            self.pos += 1
            result[key] = self.value_after_key(rest, indent, line, path)
        return result

    def value_after_key(self, rest, indent, line, path):
        if rest:
            return _scalar_or_flow(rest, self.path, line.number)
        if self.pos < len(self.lines):
            nxt = self.lines[self.pos]
            if nxt.indent > indent:
                return self.block(nxt.indent, path)
            # YAML lets a list sit at the same indentation as its key.
            if nxt.indent == indent and _is_item(nxt.text):
                return self.sequence(indent, path)
        return None

    def sequence(self, indent, keys):
        result = []
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if line.indent < indent:
                break
            if line.indent > indent:
                self.fail("bad indentation: expected %d spaces here, found %d" % (indent, line.indent), line.number)
            if not _is_item(line.text):
                break
            path = keys + (len(result),)
            self.key_lines[path] = line.number
            body = line.text[1:]
            content = _no_comment(body.lstrip(" "))
            if not content:
                self.pos += 1
                value = None
                if self.pos < len(self.lines) and self.lines[self.pos].indent > indent:
                    value = self.block(self.lines[self.pos].indent, path)
                result.append(value)
                continue
            inner = indent + 1 + (len(body) - len(content))
            if _is_item(content) or (not content.startswith("#") and _split_key(content, self.path, line.number)):
                # `- key: value` / `- - x`: the item's content is a block starting at the text's column.
                self.lines[self.pos] = _Line(line.number, inner, content)
                result.append(self.block(inner, path))
            else:
                self.pos += 1
                result.append(_scalar_or_flow(content, self.path, line.number))
        return result


def _is_item(text):
    return text == "-" or text.startswith("- ")


def _split_key(text, path, number):
    """(key, rest-after-colon) for a `key: value` line, or None when the line is not one."""
    if text[0] in "\"'":
        key, end = _quoted(text, 0, path, number)
        tail = text[end:].lstrip(" ")
        if not tail.startswith(":") or (len(tail) > 1 and tail[1] != " "):
            return None
        return key, _no_comment(tail[1:].strip())
    if text[0] in "?":
        raise ConfigError("complex keys ('? ') are not supported", path, number)
    if text[0] in "[{":
        return None
    index = 0
    while True:
        index = text.find(":", index)
        if index < 0:
            return None
        hash_at = text.find(" #")
        if 0 <= hash_at < index:
            return None
        if index + 1 == len(text) or text[index + 1] == " ":
            break
        index += 1
    key = text[:index].rstrip()
    if not key:
        raise ConfigError("a key is missing before ':'", path, number)
    if key[0] in "&*!|>%@`":
        raise ConfigError("key %r: anchors, aliases, tags and special characters are not supported at the "
                          "start of a key; quote it" % key, path, number)
    return key, _no_comment(text[index + 1:].strip())


def _no_comment(rest):
    """'# note' after 'key:' is a comment, not the value."""
    return "" if rest.startswith("#") else rest


def _quoted(text, start, path, number):
    """(string, index after the closing quote) for the quoted scalar at text[start]."""
    quote = text[start]
    out = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            if quote == "'" and text[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if char == "\\" and quote == '"':
            code = text[i + 1:i + 2]
            if code in _HEX_LEN:
                digits = text[i + 2:i + 2 + _HEX_LEN[code]]
                if len(digits) != _HEX_LEN[code] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise ConfigError("bad escape \\%s%s in a double-quoted string" % (code, digits), path, number)
                if int(digits, 16) > 0x10FFFF:
                    raise ConfigError("escape \\%s%s is beyond the last Unicode character (10FFFF)"
                                      % (code, digits), path, number)
                out.append(chr(int(digits, 16)))
                i += 2 + _HEX_LEN[code]
                continue
            if code not in _ESCAPES:
                raise ConfigError("unknown escape \\%s in a double-quoted string; write \\\\ for a backslash"
                                  % code, path, number)
            out.append(_ESCAPES[code])
            i += 2
            continue
        out.append(char)
        i += 1
    raise ConfigError("a %s-quoted string is not closed on this line; multi-line strings are not supported"
                      % ("double" if quote == '"' else "single"), path, number)


def _after_value(text, end, path, number):
    """Only blanks or a comment may follow a complete value."""
    tail = text[end:]
    if tail.strip() and not (tail[0] in " \t" and tail.strip().startswith("#")):
        raise ConfigError("unexpected text after the value: %r" % tail.strip(), path, number)


def _scalar_or_flow(text, path, number):
    if text.startswith("#"):
        return None
    first = text[0]
    if first in "\"'":
        value, end = _quoted(text, 0, path, number)
        _after_value(text, end, path, number)
        return value
    if first in "[{":
        value, end = _Flow(text, path, number).value(0)
        _after_value(text, end, path, number)
        return value
    if first in "&*!":
        raise ConfigError("anchors (&), aliases (*) and tags (!) are not supported; write the value out",
                          path, number)
    if first in "|>":
        raise ConfigError("block scalars (| and >) are not supported; put the value on one line in quotes",
                          path, number)
    if first in "@`%":
        raise ConfigError("a value cannot start with %r; put it in double quotes" % first, path, number)
    if text.startswith("- ") or text == "-":
        raise ConfigError("a list item cannot follow 'key:' on the same line; put it on the next line",
                          path, number)
    hash_at = text.find(" #")
    if hash_at >= 0:
        text = text[:hash_at].rstrip()
    if ": " in text or text.endswith(":"):
        raise ConfigError("a plain value cannot contain ': '; put the value in double quotes", path, number)
    return _plain(text)


def _plain(text):
    if _INT_RE.match(text) and len(text) <= MAX_INT_DIGITS:
        return int(text)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in _NULL:
        return None
    if _FLOAT_RE.match(text):
        return float(text)
    return text


class _Flow:
    """A one-line flow collection: [a, "b", {k: v}]."""

    def __init__(self, text, path, number):
        self.text = text
        self.path = path
        self.number = number
        self.depth = 0

    def fail(self, message):
        raise ConfigError(message, self.path, self.number)

    def skip(self, i):
        while i < len(self.text) and self.text[i] == " ":
            i += 1
        if i >= len(self.text) or self.text[i:i + 2] == "# ":
            self.fail("a [ or { is not closed on this line; flow collections must fit on one line")
        return i

    def value(self, i):
        i = self.skip(i)
        char = self.text[i]
        if char == "[":
            return self.sequence(i + 1)
        if char == "{":
            return self.mapping(i + 1)
        if char in "\"'":
            return _quoted(self.text, i, self.path, self.number)
        if char in "&*!|>@`%#":
            self.fail("%r is not supported inside [ ] or { }" % char)
        end = i
        while end < len(self.text) and self.text[end] not in ",]}" and self.text[end:end + 2] != ": " \
                and self.text[end:end + 2] != " #":
            end += 1
        word = self.text[i:end].rstrip()
        if not word:
            self.fail("an empty entry in a [ ] or { } list")
        return _plain(word), end

    def sequence(self, i):
        result = []

        def item(i):
            value, i = self.value(i)
            result.append(value)
            return i
        return result, self._flow(i, "]", item, "[ ] list")

    def mapping(self, i):
        result = {}

        def entry(i):
            key, i = self.value(i)
            if not isinstance(key, str) or isinstance(key, bool):
                key = _key_text(key)
            if self.text[i:i + 1] != ":":
                self.fail("expected 'key: value' inside { }")
            if key in result:
                self.fail("duplicate key %r inside { }" % key)
            result[key], i = self.value(i + 1)
            return i
        return result, self._flow(i, "}", entry, "{ } mapping")

    def _flow(self, i, close, item, what):
        """Read the comma-separated items of a [ ] or { } up to `close`; item(i) reads one and returns
        the index after it. Returns the index after `close`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail("[ ] and { } nested more than %d levels deep" % MAX_DEPTH)
        try:
            return self._items(i, close, item, what)
        finally:
            self.depth -= 1

    def _items(self, i, close, item, what):
        i = self.skip(i)
        if self.text[i:i + 1] == close:
            return i + 1
        while True:
            i = self.skip(item(i))
            char = self.text[i:i + 1]
            if char == close:
                return i + 1
            if char != ",":
                self.fail("expected ',' or '%s' in a %s" % (close, what))
            i += 1


def _key_text(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dump(obj):
    """Block YAML: keys sorted, every string double-quoted (JSON escapes are valid YAML), same input, same bytes."""
    if isinstance(obj, dict) and obj:
        return "".join(_dump_mapping(obj, 0))
    if isinstance(obj, list) and obj:
        return "".join(_dump_sequence(obj, 0))
    return _scalar_text(obj) + "\n"


def _dump_mapping(mapping, indent):
    pad = " " * indent
    for key in sorted(mapping, key=str):
        value = mapping[key]
        head = pad + _key_out(key) + ":"
        if _is_block(value):
            yield head + "\n"
            if isinstance(value, dict):
                for chunk in _dump_mapping(value, indent + 2):
                    yield chunk
            else:
                for chunk in _dump_sequence(value, indent + 2):
                    yield chunk
        else:
            yield head + " " + _scalar_text(value) + "\n"


def _dump_sequence(items, indent):
    pad = " " * indent
    for value in items:
        if isinstance(value, dict) and value:
            # The first key shares the dash's line; the rest line up under it.
            chunks = list(_dump_mapping(value, indent + 2))
            yield pad + "- " + chunks[0][indent + 2:]
            for chunk in chunks[1:]:
                yield chunk
        elif isinstance(value, list) and value:
            yield pad + "-\n"
            for chunk in _dump_sequence(value, indent + 2):
                yield chunk
        else:
            yield pad + "- " + _scalar_text(value) + "\n"


def _is_block(value):
    return isinstance(value, (dict, list)) and bool(value)


def _key_out(key):
    key = _key_text(key) if not isinstance(key, str) else key
    if _SAFE_KEY_RE.match(key) and key.lower() not in _AMBIGUOUS:
        return key
    return _quote(key)


def _quote(text):
    # U+2028/2029 are line breaks to YAML 1.1 readers; JSON leaves them raw, so escape them.
    return json.dumps(text, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _scalar_text(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    raise TypeError("cannot write %r as YAML" % (value,))
