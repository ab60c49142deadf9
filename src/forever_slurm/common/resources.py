"""Reads data bundled in the .pyz (default .env, services), or from the source tree when not zipped."""

import os
import pkgutil

_SOURCE_TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def read_bytes(name):
    """Bytes of data file `name` ('env.default', 'services/<svc>/<file>'), or None if absent."""
    try:
        data = pkgutil.get_data("forever_slurm", "data/" + name)
    except (OSError, IOError):
        data = None
    if data is not None:
        return data
    source_name = ".env.default" if name == "env.default" else name
    try:
        with open(os.path.join(_SOURCE_TOP, source_name), "rb") as handle:
            return handle.read()
    except (OSError, IOError):
        return None


def read_text(name):
    data = read_bytes(name)
    return None if data is None else data.decode("utf-8")


def bundled_files():
    """Paths ('services/x/x.sub', ...) of every bundled service file, from the build's index."""
    index = read_text("services/INDEX")
    if index is not None:
        return [line for line in index.splitlines() if line.strip()]
    top = os.path.join(_SOURCE_TOP, "services")
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for filename in sorted(filenames):
            if filename.startswith(".") or filename.endswith(".pyc"):
                continue
            found.append(os.path.relpath(os.path.join(dirpath, filename), _SOURCE_TOP).replace(os.sep, "/"))
    return found
