"""Service folders: find them (the user's and the bundled ones), read their .sub and .yml, stage them."""

import filecmp
import fnmatch
import glob
import os
import stat
from typing import NamedTuple, Optional

from . import fsutil, resources, sbatch_script, validate
from .errors import ConfigError


class ServiceDef(NamedTuple):
    """A service as found on disk: the batch script to submit and its optional Traefik template."""
    name: str
    folder: str
    script: str                 # the user's .sub file
    template: Optional[str]     # the user's .yml file, or None for the generated default
    script_sets_output: bool    # the .sub has its own #SBATCH --output
    warning_seconds: int = 0    # '#SBATCH --signal=...@N': the job is warned N s (up to N+60) before its end
    time_limit: Optional[int] = None    # '#SBATCH --time': seconds it asks (None: the partition's default)
    options: tuple = ()         # [(line, option, value)] of its #SBATCH header, for messages naming a line


def bundled_names():
    names = set()
    for path in resources.bundled_files():
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "services":
            names.add(parts[1])
    return sorted(names)


def available(layout):
    """Every service a user can choose: folders under services/ plus the bundled ones."""
    names = set(bundled_names())
    try:
        entries = os.listdir(layout.services)
    except OSError:
        entries = []        # none yet, or not readable: `load` says which when one is asked for
    for entry in entries:
        if os.path.isdir(os.path.join(layout.services, entry)) and not entry.startswith("."):
            names.add(entry)
    return sorted(names)


def unpack_bundled(layout, name):
    """Copy a bundled service into services/<name>/ so the user can see and edit it.

    Never touches an existing folder: the user's copy wins.
    """
    folder = os.path.join(layout.services, name)
    if os.path.exists(folder):
        return False
    prefix = "services/%s/" % name
    files = [p for p in resources.bundled_files() if p.startswith(prefix)]
    if not files:
        return False
    tmp = folder + ".tmp-%d" % os.getpid()
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o755)            # explicit modes: a umask of 0 must not make scripts world-writable
    for path in files:
        target = os.path.join(tmp, path[len(prefix):])
        fsutil.atomic_write(target, resources.read_bytes(path),
                            mode=0o755 if target.endswith((".sub", ".sh")) else 0o644)
    os.replace(tmp, folder)
    return True


def ensure_freeport(layout):
    """${FOREVER_ROOT}/freeport.sh, which service scripts of the original tool call."""
    target = os.path.join(layout.root, "freeport.sh")
    if os.path.exists(target):
        return False
    fsutil.atomic_write(target, resources.read_bytes("services/freeport.sh"), mode=0o755)
    return True


def load(layout, name, listed_at=None):
    """The ServiceDef of `name`; ConfigError naming the file and line when it is not usable.

    listed_at: the (path, line) that asked for the service (SERVICE_LIST's, an envfile.EnvValue does),
    named by the errors about the name itself. Reads only: a bundled service without a folder yet is a
    ConfigError until someone who may write (the loop, `config`) calls unpack_bundled first."""
    where = tuple(listed_at)[-2:] if listed_at else (None, None)
    if not validate.is_service_name(name):
        raise ConfigError("%r is not a valid service name (no spaces; letters, digits, . _ -)" % name, *where)
    folder = os.path.join(layout.services, name)
    if not _is_folder(folder):
        if name in bundled_names():
            raise ConfigError("bundled service %s is not unpacked yet (the loop does it on its first "
                              "look)" % name, folder)
        else:
            raise ConfigError("unknown service %r in SERVICE_LIST: no folder %s and no bundled service of "
                              "that name (available: %s)" % (name, folder, ", ".join(available(layout)) or "none"),
                              *where)
    entries = _entries(folder)
    script = _pick(folder, name, ".sub", entries)
    if script is None:
        raise ConfigError("no Slurm script: expected a file named %s*.sub in this folder" % name, folder)
    text = _read(script)
    job_name, line = sbatch_script.script_job_name(text)
    if job_name is None:
        raise ConfigError("no '#SBATCH --job-name %s' line before the first command; the job name "
                          "must equal the service name" % name, script, 1)
    if job_name != name:
        raise ConfigError("job name %r differs from the service name %r; forever-slurm counts jobs by "
                          "their name, so set '#SBATCH --job-name %s'" % (job_name, name, name), script, line)
    options = sbatch_script.sbatch_options(text)
    sets_output = any(opt in ("--output", "-o") for _, opt, _ in options)
    warning, limit = 0, None
    for _, opt, value in options:
        if opt == "--signal":
            when = value.rpartition("@")[2] if "@" in value else "60"
            warning = int(when) if validate.ascii_digits(when) else 60
        elif opt in ("--time", "-t"):
            limit = sbatch_script.time_limit_seconds(value)     # the last one wins, as in sbatch
    return ServiceDef(name=name, folder=folder, script=script, template=_pick(folder, name, ".yml", entries),
                      script_sets_output=sets_output, warning_seconds=warning, time_limit=limit,
                      options=tuple(options))


def _is_folder(folder):
    """True for a folder; False when there is none. What keeps us from looking (a services/ folder
    that is not searchable, a file in its place) is a ConfigError that says so, not "unknown"."""
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError("cannot look at this service folder: %s; check its permissions (and those of "
                          "services/)" % (exc.strerror or exc), folder)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError("this is not a folder; a service lives in services/<name>/", folder)
    return True


def _entries(folder):
    """The names in a service folder; ConfigError saying why when it cannot be read."""
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise ConfigError("cannot read this service folder: %s; check its permissions (chmod u+rx)"
                          % (exc.strerror or exc), folder)


def _pick(folder, name, suffix, entries):
    """<name><suffix> when the folder has it (a web-old.sub beside web.sub is not the one meant), else
    the first <name>*<suffix> by name, as before; None when there is none. `check` names the file chosen."""
    exact = os.path.join(folder, name + suffix)
    if name + suffix in entries and os.path.isfile(exact):
        return exact
    found = [e for e in entries if fnmatch.fnmatchcase(e, glob.escape(name) + "*" + suffix)]
    return os.path.join(folder, found[0]) if found else None


def stage(layout, service):
    """Copy a service's files into .work/, as the original tool did, so scripts find
    ${FOREVER_ROOT}/.work/<file>. Returns the staged script path; a changed staged file is kept as .bak."""
    os.makedirs(layout.work, exist_ok=True)
    ensure_freeport(layout)
    entries = [e for e in sorted(os.listdir(service.folder))
               if os.path.isfile(os.path.join(service.folder, e)) and not e.endswith(".yml")]
    for entry in entries:
        if layout.is_own_work_name(entry):
            raise ConfigError("%r is a name forever-slurm uses in .work/ itself, where service files are "
                              "copied: rename the file (and where the script uses it)" % entry,
                              os.path.join(service.folder, entry))
    for entry in entries:
        _copy_if_changed(os.path.join(service.folder, entry), os.path.join(layout.work, entry))
    return os.path.join(layout.work, os.path.basename(service.script))


def _copy_if_changed(source, target):
    """Copy with the source's exec bits but never group/other write; an older staged copy is kept
    as a backup (fsutil.backup_name) before it is replaced. Files of any size are copied whole."""
    with open(source, "rb") as handle:
        mode = 0o755 if os.fstat(handle.fileno()).st_mode & 0o111 else 0o644
        try:
            if filecmp.cmp(source, target, shallow=False):
                return False
            fsutil.backup(target)
        except FileNotFoundError:
            pass
        fsutil.atomic_write(target, handle, mode=mode)
    return True


def _read(path):
    """A .sub's text; refuses what is not a sane regular UTF-8 file, naming the line of a bad byte."""
    try:
        text = fsutil.read_text_file(path, "Slurm script")
    except FileNotFoundError:
        raise ConfigError("the Slurm script is gone", path)
    if "\ufffd" in text:
        raise ConfigError("not UTF-8 text: save the script as UTF-8", path,
                          text[:text.index("\ufffd")].count("\n") + 1)
    return text
