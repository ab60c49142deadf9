"""The root directory's layout and its typed settings (.env over .env.default over the bundled defaults)."""

import difflib
import hashlib
import os
import re
import sys
from collections import OrderedDict
from typing import Callable, List, NamedTuple, Tuple

from . import envfile, fsutil, hostname, resources, validate
from .errors import ConfigError

# What forever-slurm keeps in .work/ itself (tests/test_services.py finds every such name in src/).
# Service files are staged there too, as the original tool did: one of these names must not be, as it
# would replace the loop's state, its lock, Traefik's files or a folder of ours.
_OWN_WORK_NAME_RE = re.compile(
    r"(?:state\.json(?:\..*)?|forever-slurm\.lock|traefik\.pid|traefik-version|traefik-static\.yml|"
    r"disk-reserve|crontab\.bak|cron-.*\.lock|started-.*\.sha256|first-host|"
    r"traefik-watch|tmp|slurm-output|log|bin|ssh|backup|wake-spool|hosts|leader)")


class Layout(NamedTuple):
    """Where everything lives under one root (the original bash tool's conventions), for one host.

    Several login nodes may run one root from the shared home. What they share stays in .work/: the
    loop's state, the jobs' output, staged service files, backups, the lease (.work/leader). What is
    one host's own (its lock, Traefik's files, logs, the wake spool, the disk reserve, its units'
    records) is in `host_work`: .work/ itself on the root's first host, where every earlier version
    kept it, else .work/hosts/<host>/ (see common/hostname). `Layout(root)` is the first host's view
    (what a root used by one host always had); the commands use `Layout.for_host(root)`."""
    root: str
    given_host: str = ""    # the host this layout is for; "" = this process's (hostname.this_host)
    first_host: str = ""    # the root's first host as recorded; "" = none yet: this host is the first

    @classmethod
    def for_host(cls, root, host=None, environ=None):
        """The layout of `root` for `host` (default: this process's host), after .work/first-host;
        reads only (with_first_host records it)."""
        host = host or hostname.this_host(environ)
        return cls(root, host, hostname.read_first_host(os.path.join(root, ".work")) or "")

    def with_first_host(self):
        """This layout once the root's first host is recorded (this host, when no other was first)."""
        return self._replace(first_host=hostname.record_first_host(self.work, self.host))

    @property
    def host(self):
        """This layout's host: a short host name, or FOREVER_HOST."""
        return self.given_host or hostname.this_host()

    @property
    def is_first_host(self):
        return not self.first_host or self.first_host == self.host

    # -- shared by every host --------------------------------------------------------------------
    @property
    def env_file(self):
        return os.path.join(self.root, ".env")

    @property
    def env_default(self):
        return os.path.join(self.root, ".env.default")

    @property
    def host_env_file(self):
        """.env.<host>: this host's own values, over .env key by key."""
        return os.path.join(self.root, ".env." + self.host)

    @property
    def services(self):
        return os.path.join(self.root, "services")

    @property
    def work(self):
        return os.path.join(self.root, ".work")

    @property
    def slurm_output(self):
        return os.path.join(self.work, "slurm-output")

    @property
    def state_file(self):
        return os.path.join(self.work, "state.json")

    @property
    def bin(self):
        return os.path.join(self.work, "bin")

    @property
    def first_host_file(self):
        return hostname.first_host_file(self.work)

    @property
    def hosts_dir(self):
        """.work/hosts: one folder per host (its host.json, and its files when it is not the first)."""
        return os.path.join(self.work, "hosts")

    @property
    def host_file(self):
        """.work/hosts/<host>/host.json: what this host's loop reports (every host, the first too)."""
        return os.path.join(self.hosts_dir, self.host, "host.json")

    @property
    def lease_dir(self):
        """.work/leader: the lease that says which host's loop leads (core/lease)."""
        return os.path.join(self.work, "leader")

    # -- this host's own -----------------------------------------------------------------------
    @property
    def host_work(self):
        """.work itself on the root's first host, .work/hosts/<host> on any other."""
        return self.work if self.is_first_host else os.path.join(self.hosts_dir, self.host)

    @property
    def watch(self):
        return os.path.join(self.host_work, "traefik-watch")

    @property
    def staging_tmp(self):
        """Temp files for the watch dir: same filesystem, outside the watched directory."""
        return os.path.join(self.host_work, "tmp")

    @property
    def log(self):
        return os.path.join(self.host_work, "log")

    @property
    def lock_file(self):
        """One loop per root and host."""
        return os.path.join(self.host_work, "forever-slurm.lock")

    @property
    def traefik_static(self):
        return os.path.join(self.host_work, "traefik-static.yml")

    @property
    def traefik_pid(self):
        return os.path.join(self.host_work, "traefik.pid")

    @property
    def traefik_version(self):
        return os.path.join(self.host_work, "traefik-version")

    @property
    def disk_reserve(self):
        return os.path.join(self.host_work, "disk-reserve")

    @property
    def wake_spool(self):
        return os.path.join(self.host_work, "wake-spool")

    @property
    def unit_id(self):
        """A short hash of the root's real path and the host: the suffix of this root's units on this
        host (forever-slurm-<id>), so that roots, and hosts that share a home, never touch each other's."""
        key = os.path.realpath(self.root) + "\0" + self.host
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]

    @staticmethod
    def is_own_work_name(name):
        """True for a name in .work/ that forever-slurm writes itself (never a staged service file)."""
        return bool(_OWN_WORK_NAME_RE.fullmatch(name))

    def make_dirs(self):
        """Every folder under .work, private to the user (0700) whatever the umask."""
        shared = [self.work] + ([] if self.is_first_host else [self.hosts_dir])
        for path in shared + [self.host_work, self.watch, self.staging_tmp, self.slurm_output, self.log, self.bin]:
            fsutil.make_private_dir(path)


def running_pyz():
    """Absolute path of the .pyz this process runs from, or None when run from source."""
    import zipfile      # here: only config and the units need it, and `status` starts faster without it
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


class Key(NamedTuple):
    """How one .env key is read: check turns its text into a typed value (raising validate.Invalid).

    Its Settings field is the key without FS_, in lower case, unless `field` names another."""
    check: Callable[[str], object]
    default: object         # only when no file names the key (the bundled .env.default names them all)
    field: str = ""         # the Settings attribute, when not the key's own name
    path: bool = False      # a file path: Settings holds it with ~ expanded (.env keeps what was typed)


DEFAULT_MAX_INSTANCES = 16
BUNDLED = "<bundled .env.default>"

# The one table of what each key accepts: settings.load (run, status, check) and the `config`
# prompts both read it. Upper bounds catch typos (an extra zero), not real needs.
KEYS = OrderedDict([
    ("FS_TRAEFIK_PORT", Key(validate.port, 13013)),
    ("FS_TRAEFIK_BIND", Key(validate.host, "127.0.0.1")),
    ("FS_TRAEFIK_PING_PORT", Key(validate.port, 13014)),
    ("FS_TRAEFIK_BIN", Key(validate.any_text, "", path=True)),
    ("FS_SLEEP_INTERVAL", Key(validate.seconds(1, 86400), 60.0)),
    ("FS_PROBE_INTERVAL", Key(validate.seconds(0.2, 3600), 2.0)),
    ("FS_PROBE_TIMEOUT", Key(validate.seconds(0.1, 600), 2.0)),
    ("FS_SLURM_TIMEOUT", Key(validate.seconds(1, 3600), 30.0)),
    ("FS_RENEW_LEAD", Key(validate.optional(validate.seconds(0, 7 * 86400)), None)),
    ("FS_RENEW_MARGIN", Key(validate.seconds(0, 86400), 60.0)),
    ("FS_SURGE", Key(validate.whole_number(0, 100), 1)),
    ("FS_DRAIN_SECONDS", Key(validate.seconds(0, 3600), 20.0)),
    ("FS_DRAIN_MAX_SECONDS", Key(validate.seconds(0, 86400), 600.0)),
    ("FS_SPREAD", Key(validate.yes_no, True)),
    ("FS_MAX_INSTANCES", Key(validate.whole_number(1, 1000), DEFAULT_MAX_INSTANCES)),
    ("FS_SCALE_TARGET", Key(validate.seconds(0.1, 10000), 4.0)),
    ("FS_SCALE_WINDOW", Key(validate.seconds(1, 3600), 20.0)),
    ("FS_SCALE_DOWN_SECONDS", Key(validate.seconds(0, 86400), 300.0)),
    ("FS_IDLE_SECONDS", Key(validate.seconds(1, 30 * 86400), 900.0)),
    ("FS_WAKE_TIMEOUT", Key(validate.seconds(1, 86400), 600.0)),
    ("FS_SSH_LOGIN_NODE", Key(validate.host_list, [], field="ssh_login_nodes")),
    ("FS_SSH_KEY_PATH", Key(validate.any_text, "~/.ssh/forever-slurm", path=True)),
    ("FS_SSH_USER", Key(validate.user_name, "")),
    ("FS_SSH_PORT", Key(validate.any_port, 22)),
    ("FS_SSH_LOCAL_PORT", Key(validate.port, 13013)),
])


class Instances(NamedTuple):
    """How many jobs a service wants: `N` (low == high, fixed) or `MIN-MAX` (scales with demand
    between low and high, down to low when idle, woken by a request when low is 0)."""
    low: int
    high: int
    scales: bool = False

    @property
    def text(self):
        return "%d-%d" % (self.low, self.high) if self.scales else "%d" % self.low

    def describe(self):
        if self.scales:
            return "%d to %d instances, by demand" % (self.low, self.high)
        return "%d instance%s" % (self.low, "" if self.low == 1 else "s")


# How min-max services follow demand: `config` asks these only when such a service is chosen.
SCALE_KEYS = ("FS_SCALE_TARGET", "FS_SCALE_WINDOW", "FS_SCALE_DOWN_SECONDS", "FS_IDLE_SECONDS", "FS_WAKE_TIMEOUT")


def field_name(key):
    """The Settings attribute that holds key's typed value."""
    return KEYS[key].field or key[len("FS_"):].lower()


# Settings is made from KEYS, so a new key is one line in KEYS: service_list first, then one field per
# key in KEYS' order, then raw (every .env value as text).
_SettingsFields = NamedTuple("_SettingsFields", [("service_list", List[Tuple[str, Instances]])]
                             + [(field_name(key), object) for key in KEYS] + [("raw", dict)])


class Settings(_SettingsFields):
    """The typed settings of a root: one field per KEYS entry (see field_name), service_list and raw."""
    __slots__ = ()

    @property
    def desired(self):
        """{service: jobs wanted now, as far as the settings tell}: N, or MIN of a min-max service
        (the loop raises that with demand, see core/scale.py)."""
        return {name: count.low for name, count in self.service_list}

    @property
    def scaling(self):
        """{service: Instances} of the min-max services."""
        return {name: count for name, count in self.service_list if count.scales}


def changed_keys(old, new):
    """What differs between two Settings, as the loop logs it: "SERVICE_LIST hello/2 -> hello/3",
    "FS_SLEEP_INTERVAL 60 -> 30" (a value as .env wrote it)."""
    found = []
    if old.service_list != new.service_list:
        found.append("SERVICE_LIST %s -> %s" % (format_service_list(old.service_list) or '""',
                                                format_service_list(new.service_list) or '""'))
    for key in KEYS:
        before, after = getattr(old, field_name(key)), getattr(new, field_name(key))
        if before != after:
            found.append("%s %s -> %s" % (key, old.raw.get(key, before), new.raw.get(key, after)))
    return found or ["nothing the loop uses"]


def load_values(layout, environ=None, env_text=None, problems=None, host_text=None, with_host=True):
    """{key: EnvValue}: bundled defaults, then the root's .env.default, then .env (or env_text in its
    place), then this host's .env.<host> (or host_text in its place), each key over the one before.

    with_host False leaves .env.<host> out (what `config` writes into .env must not be this host's own).
    problems: collects each bad line's ConfigError instead of raising the first (envfile.parse)."""
    bundled_text = resources.read_text("env.default") or ""
    values = envfile.parse(bundled_text, BUNDLED, environ)
    values.update(envfile.read(layout.env_default, environ, values, problems))
    if env_text is None:
        values.update(envfile.read(layout.env_file, environ, values, problems))
    else:
        values.update(envfile.parse(env_text, layout.env_file, environ, values, problems))
    if with_host:
        values.update(host_values(layout, environ, values, problems, host_text))
    return values


def host_values(layout, environ=None, known=None, problems=None, host_text=None):
    """{key: EnvValue} of .env.<host> (or host_text in its place): the same reading rules as .env.
    SERVICE_LIST is refused there: which services run is the root's, the same on every host."""
    path = layout.host_env_file
    if host_text is None:
        values = envfile.read(path, environ, known, problems)
    else:
        values = envfile.parse(host_text, path, environ, known, problems)
    entry = values.pop("SERVICE_LIST", None)
    if entry is not None:
        error = ConfigError("SERVICE_LIST is the same on every login node: set it in %s, not here"
                            % layout.env_file, entry.path, entry.line)
        if problems is None:
            raise error
        problems.append(error)
    return values


def load(layout, environ=None, env_text=None, host_text=None):
    """Typed Settings; the first bad value raises ConfigError naming its file and line.

    env_text, host_text: check a .env or .env.<host> not yet written (config validates before it installs one).
    """
    conf, problems = check(layout, environ, env_text, host_text)
    if problems:
        raise problems[0]
    return conf


def check(layout, environ=None, env_text=None, host_text=None):
    """(Settings or None, [ConfigError for every bad line and value, in file order]); an unreadable
    file is raised at once."""
    problems = []
    values = load_values(layout, environ, env_text, problems, host_text)
    typed = {}
    for key, spec in KEYS.items():
        try:
            typed[key] = checked(values, key)
        except ConfigError as exc:
            problems.append(exc)
            typed[key] = spec.default
    if typed["FS_TRAEFIK_PING_PORT"] == typed["FS_TRAEFIK_PORT"]:
        where = _edited(values, "FS_TRAEFIK_PING_PORT", "FS_TRAEFIK_PORT")
        problems.append(ConfigError("FS_TRAEFIK_PING_PORT must differ from FS_TRAEFIK_PORT (%d)"
                                    % typed["FS_TRAEFIK_PORT"], where.path, where.line))
    try:
        service_list = parse_service_list(values.get("SERVICE_LIST"), typed["FS_MAX_INSTANCES"])
    except ConfigError as exc:
        problems.append(exc)
        service_list = []
    if problems:
        return None, sorted(problems, key=_where)
    return _settings(typed, service_list, values), []


def _where(problem):
    """Sort key: the problems of one file in line order, the bundled defaults' last."""
    return (problem.path == BUNDLED, problem.path or "", problem.line or 0)


def unknown_keys(layout, values):
    """A ConfigError naming file and line for each FS_ key that neither forever-slurm nor the root's
    .env.default knows: a typo such as FS_SLEEP_INTERVALL would otherwise change nothing without a word.
    Other keys (a service's own, such as LLAMA_MODEL) are the user's business."""
    known = set(KEYS) | set(envfile.parse(resources.read_text("env.default") or "", BUNDLED, {}))
    known |= set(envfile.read(layout.env_default, {}, None, []))
    found = []
    for key, entry in sorted(values.items(), key=lambda item: (item[1].path or "", item[1].line or 0)):
        if key.startswith("FS_") and key not in known:
            close = difflib.get_close_matches(key, sorted(known), 1, 0.8)
            found.append(ConfigError("%s is not a forever-slurm setting, so it changes nothing%s"
                                     % (key, "; did you mean %s?" % close[0] if close else ""),
                                     entry.path, entry.line))
    return found


def _edited(values, *keys):
    """The entry among keys that a user's file set (not the bundled defaults), for an error's file:line."""
    entries = [values[key] for key in keys if key in values]
    mine = [entry for entry in entries if entry.path != BUNDLED]
    return (mine or entries or [envfile.EnvValue("", None, None)])[0]


def checked(values, key):
    """The typed value of `key`: its check applied to its text, or its default when no file names it."""
    spec = KEYS[key]
    entry = values.get(key)
    if entry is None:
        return spec.default
    try:
        return spec.check(entry.value)
    except validate.Invalid as exc:
        raise ConfigError("%s: %s" % (key, exc), entry.path, entry.line)


def _settings(typed, service_list, values):
    fields = {field_name(key): os.path.expanduser(value) if KEYS[key].path else value
              for key, value in typed.items()}
    return Settings(service_list=service_list, raw={k: v.value for k, v in values.items()}, **fields)


service_name = validate.service_name


def parse_instances(text):
    """'N' or 'MIN-MAX' -> Instances; raises validate.Invalid (the bound FS_MAX_INSTANCES is the caller's)."""
    low, dash, high = text.partition("-")
    try:
        low = _INSTANCES(low)
        if not dash:
            return Instances(low, low)
        high = _INSTANCES(high)
    except validate.Invalid:
        raise validate.Invalid("%r is not an instance count N or a range MIN-MAX" % text)
    if high < low or high == 0:
        raise validate.Invalid("%r: in MIN-MAX, MAX must be at least MIN and at least 1" % text)
    return Instances(low, high, scales=True)


def parse_service_word(word):
    """'name/N', 'name/MIN-MAX' (or 'name', meaning 1) -> (name, Instances); raises validate.Invalid."""
    name, sep, count = word.partition("/")
    service_name(name)
    if not sep:
        return name, Instances(1, 1)
    try:
        return name, parse_instances(count)
    except validate.Invalid as exc:
        raise validate.Invalid("%s: %s, as in %s/2 or %s/0-4" % (word, exc, name, name))


_INSTANCES = validate.whole_number(0, 10 ** 9)      # the per-root FS_MAX_INSTANCES is checked after


def parse_service_list(entry, max_instances=None):
    """'a/2 b/0-4' -> [('a', Instances(2, 2)), ('b', Instances(0, 4, True))]; entry is an EnvValue
    (for file:line) or None.

    max_instances None skips the bound (config reads a list it is about to let you fix).
    """
    if entry is None:
        return []
    result = []
    seen = set()
    for word in entry.value.split():
        try:
            name, count = parse_service_word(word)
        except validate.Invalid as exc:
            raise ConfigError("SERVICE_LIST: %s" % exc, entry.path, entry.line)
        if name in seen:
            raise ConfigError("SERVICE_LIST: %s is listed twice" % name, entry.path, entry.line)
        if max_instances is not None and count.high > max_instances:
            raise ConfigError("SERVICE_LIST: %s asks for more than FS_MAX_INSTANCES=%d instances; lower it, "
                              "or raise FS_MAX_INSTANCES if you mean it" % (word, max_instances),
                              entry.path, entry.line)
        seen.add(name)
        result.append((name, count))
    return result


def format_service_list(pairs):
    return " ".join("%s/%s" % (name, count.text) for name, count in pairs)
