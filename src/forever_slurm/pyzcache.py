"""Imports the .pyz's modules from a private copy on disk, so each Python compiles them once, not at every start.

Python never caches the bytecode of modules it imports from a zip: every `status` recompiled the whole
program (about half of its start time). On first use of a .pyz, its modules are copied, unchanged,
into ~/.cache/forever-slurm/pyz-<sha256 of the .pyz>/ (0700, made complete in a temporary folder and
renamed into place, so a reader sees all of it or nothing); from then on the package is imported from
there, from the __pycache__/*.<python>.pyc each Python compiles once beside them (also under
PYTHONDONTWRITEBYTECODE, which only stops Python writing them as it imports). Several Pythons and
several .pyz versions share the cache side by side. When the cache cannot be used (no home, a read-only
or foreign folder, a full disk), the modules are imported from the .pyz as before. Data files
(bundled services, .env.default) are still read from the .pyz itself.

Delete ~/.cache/forever-slurm while no forever-slurm runs to reclaim its space (about 1 MB per version).
"""

import hashlib
import os
import sys

PACKAGE = "forever_slurm"
COMPLETE = "COMPLETE"           # written last inside the temporary folder: the copy is whole


def cache_home(environ=None):
    """~/.cache/forever-slurm (or $XDG_CACHE_HOME/forever-slurm); None without a home."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or (os.path.join(environ["HOME"], ".cache") if environ.get("HOME") else "")
    return os.path.join(base, "forever-slurm") if base and os.path.isabs(base) else None


def _private_dir(path):
    """Make path (0700) if missing; True when it is a directory of ours that nobody else can write."""
    try:
        os.makedirs(path, 0o700)
    except OSError:
        pass
    try:
        info = os.lstat(path)
    except OSError:
        return False
    import stat
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _digest(archive):
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


def _extract(archive, home, target):
    """Copy the package's .py files into target, whole or not at all; True when target is complete."""
    import shutil       # here, not above: a start that finds its copy imports no more than it needs
    import tempfile
    import zipfile
    work = tempfile.mkdtemp(prefix=".partial-", dir=home)
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                if not name.startswith(PACKAGE + "/") or not name.endswith(".py") or ".." in name.split("/"):
                    continue
                path = os.path.join(work, *name.split("/"))
                os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(zipped.read(name))
        with open(os.path.join(work, COMPLETE), "w") as handle:
            handle.write(archive + "\n")
        try:
            os.rename(work, target)
        except OSError:
            pass        # another process put its copy there first: that one is used
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return os.path.exists(os.path.join(target, COMPLETE))


def _compile_once(target):
    """Each Python compiles the copy once (its own .pyc names), marked done by COMPILED-<cache tag>."""
    tag = getattr(sys.implementation, "cache_tag", None)
    if not tag:
        return
    marker = os.path.join(target, "COMPILED-" + tag)
    if os.path.exists(marker):
        return
    import py_compile
    for dirpath, _, filenames in os.walk(os.path.join(target, PACKAGE)):
        for name in filenames:
            if name.endswith(".py"):
                try:
                    py_compile.compile(os.path.join(dirpath, name), doraise=True)
                except (py_compile.PyCompileError, OSError):
                    return      # no marker: the next start tries again; imports compile what is missing
    with open(marker, "w") as handle:
        handle.write(sys.version + "\n")


def cached_package_dir(archive, environ=None):
    """The directory holding this archive's copy of the package (made when missing), or None."""
    home = cache_home(environ)
    if not home or not _private_dir(home):
        return None
    target = os.path.join(home, "pyz-" + _digest(archive))
    if not os.path.exists(os.path.join(target, COMPLETE)) and not _extract(archive, home, target):
        return None
    if not _private_dir(target):
        return None
    _compile_once(target)
    return os.path.join(target, PACKAGE)


def install(package=None, environ=None):
    """Import the rest of the package from its cached copy when it was loaded from a .pyz; returns the
    directory now used, or None (not a .pyz, or the cache cannot be used: nothing changes)."""
    package = package or sys.modules[PACKAGE]
    archive = getattr(getattr(package, "__loader__", None), "archive", None)
    if not archive or not os.path.isfile(archive):
        return None
    try:
        directory = cached_package_dir(archive, environ)
    except Exception:       # noqa: BLE001 (a full disk, a broken zip...: the zip itself still works)
        return None
    if directory:
        package.__path__[:] = [directory]
    return directory
