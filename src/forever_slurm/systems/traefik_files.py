"""Traefik's files: service templates read from disk, dynamic and static config written atomically,
files of services no longer active removed. The text itself comes from traefik (pure)."""

import os

from ..common import fsutil
from ..common.errors import ConfigError
from . import traefik
from .traefik_check import check_service_name

TEMPLATE_LIMIT = 1 << 20


def load_template(path, service, traefik_version=None):
    """Template from a service's .yml; ConfigError naming path:line for anything Traefik would reject."""
    check_service_name(service)
    try:
        text = fsutil.read_text_file(path, "Traefik template", TEMPLATE_LIMIT)
    except FileNotFoundError:
        raise ConfigError("cannot read the Traefik template: it does not exist", path)
    if "\ufffd" in text:
        line = text[:text.index("\ufffd")].count("\n") + 1
        raise ConfigError("not UTF-8 text: save the template as UTF-8", path, line)
    return traefik.parse_template(text, path, service, traefik_version)


def write_if_changed(path, text, tmp_dir):
    """Atomically replace `path` with `text` unless it already holds it; True when written.

    The temp file lives in tmp_dir (same filesystem, outside the watched directory): a temp
    file inside it would wake Traefik's watcher first and delay the real change by ~2 s.
    """
    return fsutil.atomic_write(path, text, mode=0o644, tmp_dir=tmp_dir, only_if_changed=True)


def remove_stale(watch_dir, keep_names):
    """Delete files in watch_dir that this tool wrote and that are not in keep_names; the removed names, sorted."""
    keep = set(keep_names)
    removed = []
    try:
        names = sorted(os.listdir(watch_dir))
    except FileNotFoundError:
        return removed
    for name in names:
        full = os.path.join(watch_dir, name)
        if name in keep or not os.path.isfile(full) or not _written_by_us(full):
            continue
        try:
            os.unlink(full)
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def _written_by_us(path):
    try:
        with open(path, "rb") as handle:
            return handle.readline().startswith(traefik.MARKER.encode("ascii"))
    except (OSError, IOError):
        return False
