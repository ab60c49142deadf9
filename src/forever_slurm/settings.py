"""The root directory's layout and its typed settings (.env over .env.default over the bundled defaults)."""

import os
import re
import sys
import zipfile
from typing import List, NamedTuple, Optional, Tuple

from . import envfile, resources
from .errors import ConfigError

SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Layout(NamedTuple):
    """Where everything lives under one root (the original bash tool's conventions)."""
    root: str

    @property
    def env_file(self):
        return os.path.join(self.root, ".env")

    @property
    def env_default(self):
        return os.path.join(self.root, ".env.default")

    @property
    def services(self):
        return os.path.join(self.root, "services")

    @property
    def work(self):
        return os.path.join(self.root, ".work")

    @property
    def watch(self):
        return os.path.join(self.work, "traefik-watch")

    @property
    def staging_tmp(self):
        """Temp files for the watch dir: same filesystem, outside the watched directory."""
        return os.path.join(self.work, "tmp")

    @property
    def slurm_output(self):
        return os.path.join(self.work, "slurm-output")

    @property
    def log(self):
        return os.path.join(self.work, "log")

    @property
    def state_file(self):
        return os.path.join(self.work, "state.json")

    @property
    def lock_file(self):
        return os.path.join(self.work, "forever-slurm.lock")

    @property
    def bin(self):
        return os.path.join(self.work, "bin")

    @property
    def traefik_static(self):
        return os.path.join(self.work, "traefik-static.yml")

    def make_dirs(self):
        for path in (self.work, self.watch, self.staging_tmp, self.slurm_output, self.log, self.bin):
            os.makedirs(path, exist_ok=True)


def running_pyz():
    """Absolute path of the .pyz this process runs from, or None when run from source."""
    main = getattr(sys.modules.get("__main__"), "__file__", None) or (sys.argv[0] if sys.argv else "")
    candidate = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else None
    for path in (candidate, main and os.path.dirname(os.path.abspath(main))):
        if path and os.path.isfile(path) and zipfile.is_zipfile(path):
            return path
    return None


def find_root(cli_root=None, environ=None):
    """--root, else $FOREVER_ROOT, else the directory holding the .pyz, else the current directory."""
    environ = os.environ if environ is None else environ
    if cli_root:
        return os.path.abspath(os.path.expanduser(cli_root))
    if environ.get("FOREVER_ROOT"):
        return os.path.abspath(os.path.expanduser(environ["FOREVER_ROOT"]))
    pyz = running_pyz()
    if pyz:
        return os.path.dirname(pyz)
    return os.getcwd()


class Settings(NamedTuple):
    service_list: List[Tuple[str, int]]
    traefik_port: int
    traefik_bind: str
    traefik_ping_port: int
    traefik_bin: str
    sleep_interval: float
    probe_interval: float
    probe_timeout: float
    slurm_timeout: float
    renew_lead: Optional[float]
    renew_margin: float
    surge: int
    drain_seconds: float
    drain_max_seconds: float
    spread: bool
    ssh_login_nodes: List[str]
    ssh_key_path: str
    ssh_user: str
    ssh_local_port: int
    raw: dict

    @property
    def desired(self):
        return dict(self.service_list)


def load_values(layout, environ=None):
    """{key: EnvValue}: bundled defaults, then the root's .env.default, then .env."""
    bundled_text = resources.read_text("env.default") or ""
    values = envfile.parse(bundled_text, "<bundled .env.default>", environ)
    values.update(envfile.read(layout.env_default, environ, values))
    values.update(envfile.read(layout.env_file, environ, values))
    return values


def load(layout, environ=None):
    """Typed Settings; a bad value raises ConfigError naming its file and line."""
    values = load_values(layout, environ)
    get = _Getter(values)
    return Settings(
        service_list=parse_service_list(values.get("SERVICE_LIST")),
        traefik_port=get.port("FS_TRAEFIK_PORT", 13013),
        traefik_bind=get.text("FS_TRAEFIK_BIND", "127.0.0.1"),
        traefik_ping_port=get.port("FS_TRAEFIK_PING_PORT", 13014),
        traefik_bin=os.path.expanduser(get.text("FS_TRAEFIK_BIN", "")),
        sleep_interval=get.number("FS_SLEEP_INTERVAL", 10, minimum=1),
        probe_interval=get.number("FS_PROBE_INTERVAL", 2, minimum=0.2),
        probe_timeout=get.number("FS_PROBE_TIMEOUT", 2, minimum=0.1),
        slurm_timeout=get.number("FS_SLURM_TIMEOUT", 30, minimum=1),
        renew_lead=get.number("FS_RENEW_LEAD", None, minimum=0),
        renew_margin=get.number("FS_RENEW_MARGIN", 60, minimum=0),
        surge=int(get.number("FS_SURGE", 1, minimum=0)),
        drain_seconds=get.number("FS_DRAIN_SECONDS", 20, minimum=0),
        drain_max_seconds=get.number("FS_DRAIN_MAX_SECONDS", 600, minimum=0),
        spread=get.flag("FS_SPREAD", True),
        ssh_login_nodes=get.text("FS_SSH_LOGIN_NODE", "").split(),
        ssh_key_path=os.path.expanduser(get.text("FS_SSH_KEY_PATH", "~/.ssh/forever-slurm")),
        ssh_user=get.text("FS_SSH_USER", ""),
        ssh_local_port=get.port("FS_SSH_LOCAL_PORT", 13013),
        raw={k: v.value for k, v in values.items()},
    )


def parse_service_list(entry):
    """'a/2 b/1' -> [('a', 2), ('b', 1)]; entry is an EnvValue (for file:line) or None."""
    if entry is None:
        return []
    result = []
    seen = set()
    for word in entry.value.split():
        name, sep, count = word.partition("/")
        if not sep:
            count = "1"
        if not SERVICE_NAME_RE.match(name):
            raise ConfigError("SERVICE_LIST: %r is not a service name (letters, digits, . _ -, no spaces)" % name,
                              entry.path, entry.line)
        if not count.isdigit():
            raise ConfigError("SERVICE_LIST: %r: the instance count must be a whole number, as in %s/2"
                              % (word, name), entry.path, entry.line)
        if name in seen:
            raise ConfigError("SERVICE_LIST: %s is listed twice" % name, entry.path, entry.line)
        seen.add(name)
        result.append((name, int(count)))
    return result


def format_service_list(pairs):
    return " ".join("%s/%d" % (name, count) for name, count in pairs)


class _Getter:
    def __init__(self, values):
        self.values = values

    def text(self, key, default):
        entry = self.values.get(key)
        return default if entry is None else entry.value

    def number(self, key, default, minimum=None):
        entry = self.values.get(key)
        if entry is None or entry.value.strip() == "":
            return default
        try:
            value = float(entry.value)
        except ValueError:
            raise ConfigError("%s must be a number of seconds, got %r" % (key, entry.value), entry.path, entry.line)
        if minimum is not None and value < minimum:
            raise ConfigError("%s must be at least %s, got %s" % (key, minimum, entry.value), entry.path, entry.line)
        return value

    def port(self, key, default):
        entry = self.values.get(key)
        if entry is None or entry.value.strip() == "":
            return default
        if not entry.value.isdigit() or not 1024 <= int(entry.value) <= 65535:
            raise ConfigError("%s must be a port from 1024 to 65535, got %r" % (key, entry.value),
                              entry.path, entry.line)
        return int(entry.value)

    def flag(self, key, default):
        entry = self.values.get(key)
        if entry is None or entry.value.strip() == "":
            return default
        word = entry.value.strip().lower()
        if word in ("yes", "true", "1", "on"):
            return True
        if word in ("no", "false", "0", "off"):
            return False
        raise ConfigError("%s must be yes or no, got %r" % (key, entry.value), entry.path, entry.line)
