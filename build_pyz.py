#!/usr/bin/env python3
"""Builds forever_slurm.pyz from src/, .env.default and services/: standard library only, reproducible.

Two builds of the same tree give the same bytes: entries sorted, timestamps fixed (SOURCE_DATE_EPOCH,
else 1980-01-01), no __pycache__, fixed permissions.
"""

import argparse
import os
import sys
import time
import zipfile

TOP = os.path.dirname(os.path.abspath(__file__))
SHEBANG = b"#!/usr/bin/env python3\n"


def collect(top=TOP):
    """[(archive name, source path)], sorted."""
    entries = []
    package = os.path.join(top, "src", "forever_slurm")
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                entries.append((os.path.relpath(path, os.path.join(top, "src")).replace(os.sep, "/"), path))
    entries.append(("__main__.py", os.path.join(package, "__main__.py")))
    entries.append(("forever_slurm/data/env.default", os.path.join(top, ".env.default")))
    service_files = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(top, "services")):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
        for name in filenames:
            if name.startswith(".") or name.endswith((".pyc", ".bak")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top).replace(os.sep, "/")
            service_files.append(rel)
            entries.append(("forever_slurm/data/" + rel, path))
    return sorted(entries), sorted(service_files)


def build(output, top=TOP):
    entries, service_files = collect(top)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    stamp = time.gmtime(max(epoch, 315532800))[:6]
    tmp = output + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(SHEBANG)
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            index = ("\n".join(service_files) + "\n").encode()
            items = [(name, open(path, "rb").read(), path) for name, path in entries]
            items.append(("forever_slurm/data/services/INDEX", index, None))
            for name, data, path in sorted(items):
                info = zipfile.ZipInfo(name, date_time=stamp)
                executable = path is not None and os.access(path, os.X_OK) and not name.endswith(".py")
                info.external_attr = (0o100755 if executable else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                archive.writestr(info, data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=os.path.join(TOP, "forever_slurm.pyz"))
    args = parser.parse_args(argv)
    path = build(args.output)
    print("built %s (%d bytes)" % (path, os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
