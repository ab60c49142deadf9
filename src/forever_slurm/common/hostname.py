"""Which login node this process runs as, and which host a root had first (`.work/first-host`).

Several login nodes may share one root on the home filesystem. What two hosts must not share (the
root's lock, Traefik's files, the logs) lives in `.work/hosts/<host>/`, except on the root's first
host, which keeps it in `.work/` itself, where every earlier version put it: an existing root goes on
unchanged on the host that runs it. The first host is recorded once, by whoever writes first (`config`,
`run`, `traefik`); readers (`status`, `check`) only read it.
"""

import os
import socket

from . import fsutil, validate
from .errors import ConfigError

FIRST_HOST_NAME = "first-host"


def this_host(environ=None):
    """FOREVER_HOST (tests run two login nodes on one machine), else the short host name."""
    environ = os.environ if environ is None else environ
    given = environ.get("FOREVER_HOST")
    if given:
        try:
            return validate.host_label(given)
        except validate.Invalid as exc:
            raise ConfigError("FOREVER_HOST: %s; unset it, or set it to this login node's short name" % exc)
    name = socket.gethostname().split(".")[0]
    try:
        return validate.host_label(name)
    except validate.Invalid:
        raise ConfigError("this host's name %r cannot name its folder under .work/hosts/; set FOREVER_HOST "
                          "to a short name such as login1 (the same in the units: run config with it)" % name)


def first_host_file(work):
    return os.path.join(work, FIRST_HOST_NAME)


def read_first_host(work):
    """The host recorded in work/first-host, or None when none is recorded yet (or the file is still
    being made: it is linked into place whole, so an empty one is someone else's half-done edit).
    ConfigError naming the file when it holds something that is not a host name."""
    path = first_host_file(work)
    try:
        text = fsutil.read_text_file(path, "first-host file", limit=1024)
    except FileNotFoundError:
        return None
    name = text.strip()
    if not name:
        return None
    try:
        return validate.host_label(name)
    except validate.Invalid as exc:
        raise ConfigError("%s; it names the login node whose files are in .work/ itself: write that host's "
                          "short name in it (or delete it on a root used by one host)" % exc, path, 1)


def record_first_host(work, host):
    """The root's first host: the one recorded, else `host`, recorded now (0600, whole or not at all,
    and only once however many hosts try at the same moment)."""
    recorded = read_first_host(work)
    if recorded:
        return recorded
    fsutil.make_private_dir(work)
    fsutil.create_once(first_host_file(work), host + "\n")
    return read_first_host(work) or host
