"""The one set of value checks: text from .env, a prompt or an option -> a typed value, or Invalid.

settings.load (for run, status, check), the `config` prompts and `config --ssh` all call these,
so a value one of them accepts is never refused (or misread) by another. Numbers are plain
ASCII decimals: `nan`, `inf`, `1e999`, `1_0` and non-ASCII digits such as `١٢` (which
str.isdigit, int and float all accept) are refused, and every number has a finite range.
"""

import ipaddress
import re

_WHOLE_RE = re.compile(r"[0-9]{1,18}")                  # [0-9], not \d: ASCII digits only
_DECIMAL_RE = re.compile(r"[0-9]{1,15}(\.[0-9]{0,15})?|\.[0-9]{1,15}")
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")      # never a leading '-': ssh would read an option
YES_WORDS = ("y", "yes", "true", "1", "on")
NO_WORDS = ("n", "no", "false", "0", "off")


def ascii_digits(text):
    """True for a non-empty run of ASCII digits (str.isdigit also says yes to '²' and '١', which int refuses or reads)."""
    return isinstance(text, str) and bool(_WHOLE_RE.fullmatch(text))


class Invalid(ValueError):
    """A value a check refuses; str() is the one-line reason, to show before asking again."""


def is_service_name(name):
    """True for a service name: letters, digits, '.', '_', '-' (not first), and nothing else, not even
    a line end (a `^...$` pattern with re.match lets "svc\n" through: this is the one check)."""
    return isinstance(name, str) and bool(_SERVICE_NAME_RE.fullmatch(name))


def service_name(text):
    """The check of a service name (SERVICE_LIST, config's menu)."""
    if not is_service_name(text):
        raise Invalid("%r is not a service name: letters, digits, . _ - and no spaces" % (text,))
    return text


def whole_number(minimum, maximum):
    """A check for a whole number from minimum to maximum."""
    def check(text):
        text = text.strip()
        if not _WHOLE_RE.fullmatch(text) or not minimum <= int(text) <= maximum:
            raise Invalid("a whole number from %d to %d is needed, got %r" % (minimum, maximum, text))
        return int(text)
    return check


def seconds(minimum, maximum):
    """A check for a number of seconds (2, 2.5, .5) from minimum to maximum."""
    def check(text):
        text = text.strip()
        if not _DECIMAL_RE.fullmatch(text):
            raise Invalid("a number of seconds like 10 or 2.5 is needed, got %r" % text)
        value = float(text)
        if not minimum <= value <= maximum:
            raise Invalid("a number of seconds from %s to %s is needed, got %r"
                          % (as_text(minimum), as_text(maximum), text))
        return value
    return check


def _port_check(minimum):
    def check(text):
        text = text.strip()
        if not _WHOLE_RE.fullmatch(text) or not minimum <= int(text) <= 65535:
            raise Invalid("a port is a whole number from %d to 65535, got %r" % (minimum, text))
        return int(text)
    return check


port = _port_check(1024)        # a port we listen on: unprivileged
any_port = _port_check(1)       # someone else's port, such as sshd's 22


def yes_no(text):
    word = text.strip().lower()
    if word in YES_WORDS:
        return True
    if word in NO_WORDS:
        return False
    raise Invalid("answer yes or no, got %r" % text)


def host(text):
    """An IP literal or a host name; never empty (Traefik reads an empty address as every interface)."""
    text = text.strip()
    if text == "":
        raise Invalid("an address is needed, like 127.0.0.1 (this host only) or 0.0.0.0 (every interface)")
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(literal)
        return text
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise Invalid("an IP address or host name like 127.0.0.1, ::1 or login1 is needed, got %r" % text)
    return text


def host_label(text):
    """One label of a host name, as a login node's short name is (login1, gpu_node01): it names a
    folder (.work/hosts/<host>) and a file (.env.<host>), so no '.', '/', space or odd byte."""
    if not isinstance(text, str) or not _LABEL_RE.fullmatch(text):
        raise Invalid("%r is not a short host name (letters, digits, _ and -, not first or last, at most 63)"
                      % (text,))
    return text


def host_list(text):
    """Host names separated by spaces (login nodes, for failover); may be empty."""
    return [host(word) for word in text.split()]


def user_name(text):
    """A login name, or empty for ssh's default."""
    text = text.strip()
    if text and not _USER_RE.fullmatch(text):
        raise Invalid("%r is not a user name (letters, digits, . _ -, not starting with -)" % text)
    return text


def any_text(text):
    return text


def optional(check):
    """check, but an empty value means 'not set' (None)."""
    def check_or_none(text):
        return None if text.strip() == "" else check(text)
    return check_or_none


def as_text(value):
    """The .env spelling of a checked value, which the same check reads back to the same value."""
    if value is None:
        return ""
    if value is True or value is False:
        return "yes" if value else "no"
    if isinstance(value, float):
        return "%d" % value if value.is_integer() else repr(value)
    if isinstance(value, list):
        return " ".join(value)
    return str(value)
