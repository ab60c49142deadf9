"""The Traefik binary in use: where it is (setting, PATH, .work/bin) and which version it is.

The version is asked from `traefik version` once per binary and kept in .work/traefik-version with
the binary's path, size and mtime, so a look costs one stat and an upgraded binary is asked again.
`version_in_use` only reads that cache; the loop calls `remember_version` to write it (readers such
as `check` never write)."""

import os
import re
import shutil
from typing import NamedTuple, Optional

from ..common import fsutil
from . import proc
from ..common.errors import CommandError, ConfigError


def _executable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def installed_path(layout):
    return os.path.join(layout.bin, "traefik")


def locate(traefik_bin_setting, layout, environ):
    """FS_TRAEFIK_BIN, else traefik on environ's PATH, else .work/bin/traefik; None when none is there."""
    if traefik_bin_setting:
        path = os.path.expanduser(traefik_bin_setting)
        if not _executable(path):
            raise ConfigError("FS_TRAEFIK_BIN=%s is not an executable file; fix the path in %s or leave it "
                              "empty to use traefik from PATH or %s"
                              % (traefik_bin_setting, layout.env_file, installed_path(layout)))
        return os.path.abspath(path)
    found = shutil.which("traefik", path=environ.get("PATH", os.defpath))
    if found:
        return found
    local = installed_path(layout)
    return local if _executable(local) else None


def parse_version(text):
    """(3, 7, 15) from `traefik version` output ("Version:      3.7.15"), or None when it names none."""
    match = re.search(r"^\s*Version:\s*v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?", text or "", re.MULTILINE)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups("0"))


def version_cache(layout):
    return layout.traefik_version


class VersionFound(NamedTuple):
    version: Optional[tuple]    # (3, 7, 15); None when `traefik version` names none
    stamp: str                  # the binary's path, size and mtime: what the cache is kept for
    from_cache: bool


def version_in_use(traefik_bin_setting, layout, environ, run=proc.run):
    """The VersionFound of the Traefik `forever_slurm traefik` would start, or None when there is no
    binary or it does not answer. Unknown means: render only what every Traefik v3 understands.
    Reads the cache, never writes it (see remember_version)."""
    try:
        binary = locate(traefik_bin_setting, layout, environ)
        info = os.stat(binary) if binary else None
    except (ConfigError, OSError):
        return None
    if info is None:
        return None
    stamp = "%s %d %d" % (binary, info.st_size, int(info.st_mtime))
    try:
        cached_stamp, _, cached = fsutil.read_text_file(version_cache(layout), "version cache", 4096).partition("\n")
        if cached_stamp == stamp:
            return VersionFound(parse_version(cached), stamp, True)
    except (FileNotFoundError, ConfigError):
        pass
    try:
        output = run([binary, "version"], timeout=15, env=dict(environ)).stdout
    except CommandError:
        return None
    return VersionFound(parse_version(output), stamp, False)


def remember_version(layout, found):
    """Keep a version just asked in .work/traefik-version, so the next look costs one stat."""
    if found is None or found.from_cache or found.version is None:
        return
    try:
        fsutil.atomic_write(version_cache(layout), "%s\nVersion: %s\n" % (found.stamp, ".".join(map(str, found.version))))
    except OSError:
        pass    # the next look asks again; nothing depends on the cache but speed
