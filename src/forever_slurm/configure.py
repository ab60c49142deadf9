"""The `config` conversation: ask for each .env.default key and the services, then write .env safely.

Contract: collect_answers() asks (or, with assume_yes, takes current values) and returns
{key: value}; write_env() installs them into .env atomically, after validating the result
with settings.load, keeping a dated backup; run_config() does both and unpacks the chosen
services. Ctrl-C or Ctrl-D at any question raises ConfigCancelled before anything is written.
"""

import difflib
import math
import os
import re
import shlex
import shutil
import sys
import time
from collections import OrderedDict
from typing import List, NamedTuple, Optional

from . import envfile, resources, services, settings
from .errors import ConfigError, ForeverError

SERVICE_LIST = "SERVICE_LIST"
SSH_PREFIX = "FS_SSH_"          # asked by `config --ssh`, as in the original config.sh
CLEAR = "-"                     # typed alone: make the value empty
MAX_MENU_ROUNDS = 200           # a runaway script of answers stops instead of looping forever
ENV_HEADER = ("# forever-slurm settings, written by `config`. Edit by hand or run config again;\n"
              "# any key left out takes its value from .env.default.\n")


class ConfigCancelled(ForeverError):
    """Ctrl-C or Ctrl-D during `config`; cli prints the message and exits 130."""

    exit_code = 130

    def __init__(self, message="config cancelled; nothing was changed"):
        super().__init__(message)


class Invalid(ValueError):
    """An answer a validator refuses; str() is the one-line reason shown before asking again."""


class ConfigResult(NamedTuple):
    answers: dict                       # key -> value, as written to .env
    env_backup: Optional[str]           # path of the previous .env, or None
    services: list                      # ServiceDef of each chosen service with instances > 0
    env_changed: bool                   # .env was written (created or changed)


# ---------------------------------------------------------------- validators
# Each takes the unquoted answer and returns the value to store, or raises Invalid.
# Minimums mirror settings.load so an accepted answer never fails there later.

def any_text(value):
    return value


def port(value):
    value = value.strip()
    if not re.match(r"^[0-9]+$", value) or not 1024 <= int(value) <= 65535:
        raise Invalid("a port is a whole number from 1024 to 65535, got %r" % value)
    return str(int(value))


def seconds(minimum, empty_ok=False):
    def check(value):
        value = value.strip()
        if value == "" and empty_ok:
            return ""
        try:
            number = float(value)
        except ValueError:
            raise Invalid("a number of seconds is needed, like 10 or 2.5, got %r" % value)
        if not math.isfinite(number) or number < minimum:
            raise Invalid("must be a number of seconds of at least %s, got %r" % (minimum, value))
        return value
    return check


def whole_number(minimum=0):
    def check(value):
        value = value.strip()
        if not re.match(r"^[0-9]+$", value) or int(value) < minimum:
            raise Invalid("a whole number of at least %d is needed, got %r" % (minimum, value))
        return str(int(value))
    return check


def yes_no(value):
    word = value.strip().lower()
    if word in ("y", "yes", "true", "1", "on"):
        return "yes"
    if word in ("n", "no", "false", "0", "off"):
        return "no"
    raise Invalid("answer yes or no, got %r" % value)


def service_name(value):
    if not settings.SERVICE_NAME_RE.match(value):
        raise Invalid("%r is not a service name: letters, digits, . _ - and no spaces" % value)
    return value


def host(value):
    if not re.match(r"^[A-Za-z0-9.:\[\]_-]+$", value):
        raise Invalid("an address like 127.0.0.1 or 0.0.0.0 is needed, got %r" % value)
    return value


def executable_or_empty(value):
    if value == "":
        return ""
    # Stored absolute: the units run Traefik from another working directory.
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise Invalid("no file at %s (leave it empty to find or download traefik)" % path)
    if not os.access(path, os.X_OK):
        raise Invalid("%s is not executable (chmod +x it, or leave this empty)" % path)
    return value if value.startswith("~") else path


VALIDATORS = {
    "FS_TRAEFIK_PORT": port,
    "FS_TRAEFIK_BIND": host,
    "FS_TRAEFIK_PING_PORT": port,
    "FS_TRAEFIK_BIN": executable_or_empty,
    "FS_SLEEP_INTERVAL": seconds(1),
    "FS_PROBE_INTERVAL": seconds(0.2),
    "FS_PROBE_TIMEOUT": seconds(0.1),
    "FS_SLURM_TIMEOUT": seconds(1),
    "FS_RENEW_LEAD": seconds(0, empty_ok=True),
    "FS_RENEW_MARGIN": seconds(0),
    "FS_SURGE": whole_number(0),
    "FS_DRAIN_SECONDS": seconds(0),
    "FS_DRAIN_MAX_SECONDS": seconds(0),
    "FS_SPREAD": yes_no,
    "FS_SSH_LOCAL_PORT": port,
}


def validator_for(key, answers):
    """The check for `key`; answers given so far let one key depend on another."""
    check = VALIDATORS.get(key, any_text)
    if key != "FS_TRAEFIK_PING_PORT":
        return check

    def distinct_port(value):
        value = check(value)
        if value == answers.get("FS_TRAEFIK_PORT"):
            raise Invalid("must differ from FS_TRAEFIK_PORT (%s)" % value)
        return value
    return distinct_port


def unquote(text):
    """A typed answer as a .env value: quotes group words, and spaces need quotes."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise Invalid("cannot read that: %s" % exc)
    if len(words) > 1:
        raise Invalid('a value with spaces must be quoted, as in "%s"' % text.strip())
    return words[0] if words else ""


# ---------------------------------------------------------------- prompting

class Prompter:
    """Asks questions through injected input/output functions, so tests and a terminal run the same code.

    interactive: a person types at a terminal, which echoes the answers. When False (a
    script or a pipe), each answer is echoed after its prompt so the output reads as a session.
    """

    def __init__(self, input_fn=input, output_fn=print, interactive=True, max_attempts=10):
        self.input_fn = input_fn
        self.output_fn = output_fn
        self.interactive = interactive
        self.max_attempts = max_attempts

    def say(self, text=""):
        self.output_fn(text)

    def ask(self, prompt, default="", validate=None):
        """The answer to `prompt`; Enter keeps `default`, '-' empties it; re-asks with the reason."""
        for _ in range(self.max_attempts):
            typed = self._read("%s [%s]: " % (prompt, default))
            try:
                value = default if typed.strip() == "" else (
                    "" if typed.strip() == CLEAR else unquote(typed))
                return validate(value) if validate else value
            except Invalid as exc:
                self.say("  ! %s" % exc)
        raise ConfigError("%s: no valid answer after %d tries" % (prompt, self.max_attempts))

    def choose(self, options, prompt="Pick a number", default=None, title=None):
        """0-based index of the option picked by number (like bash `select`) or by its exact name."""
        if title:
            self.say(title)
        width = len(str(len(options)))
        for number, label in enumerate(options, 1):
            self.say("  %*d) %s" % (width, number, label))
        names = [label.split()[0] if label.split() else label for label in options]

        def pick(value):
            value = value.strip()
            if re.match(r"^[0-9]+$", value) and 1 <= int(value) <= len(options):
                return int(value) - 1
            if value in names:
                return names.index(value)
            raise Invalid("type a number from 1 to %d" % len(options))
        return self.ask(prompt, "" if default is None else str(default + 1), pick)

    def _read(self, prompt_text):
        try:
            typed = self.input_fn(prompt_text if self.interactive else "")
        except (EOFError, KeyboardInterrupt):
            self.say("")       # end the half-written prompt line (the terminal shows ^C or nothing)
            raise ConfigCancelled()
        if not self.interactive:
            self.say(prompt_text + typed)
        return typed


def terminal_prompter():
    """A Prompter on stdin/stdout; with a terminal, readline gives line editing as bash `read -e` did."""
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (importing it is what enables editing in input())
        except ImportError:
            pass
    return Prompter(input, _print_now, interactive)


def _print_now(text=""):
    print(text)
    sys.stdout.flush()


# ---------------------------------------------------------------- the template (.env.default)

class Template(NamedTuple):
    text: str               # the root's .env.default, else the bundled one
    keys: List[str]         # bundled keys in order, then the root's extra ones
    comments: dict          # key -> comment lines above it (the root's wins)


def template(layout):
    bundled = resources.read_text("env.default") or ""
    try:
        with open(layout.env_default, encoding="utf-8") as handle:
            own = handle.read()
    except FileNotFoundError:
        own = ""
    keys = _keys(bundled)
    keys += [key for key in _keys(own) if key not in keys]
    comments = envfile.comments_by_key(bundled)
    comments.update((k, v) for k, v in envfile.comments_by_key(own).items() if v)
    return Template(own or bundled, keys, comments)


def _keys(text):
    keys = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key = line[len("export "):] if line.startswith("export ") else line
            key = key.partition("=")[0].strip()
            if key not in keys:
                keys.append(key)
    return keys


# ---------------------------------------------------------------- collecting answers

def parse_overrides(overrides, keys):
    """['KEY=VALUE', ...] from --set -> OrderedDict, each checked; a bad one names the option."""
    result = OrderedDict()
    for item in overrides:
        option = "--set %s" % item
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not envfile.KEY_RE.match(key):
            raise ConfigError("%s: expected KEY=VALUE, as in --set FS_TRAEFIK_PORT=14000" % option)
        if key == SERVICE_LIST:
            raise ConfigError("%s: choose services with --service NAME=N instead" % option)
        if key not in keys:
            close = difflib.get_close_matches(key, keys, 3)
            raise ConfigError("%s: unknown key %s%s" % (
                option, key, "; did you mean %s?" % " or ".join(close) if close else
                "; known keys: %s" % ", ".join(k for k in keys if k != SERVICE_LIST)))
        result[key] = _checked(option, VALIDATORS.get(key, any_text), value)
    return result


def parse_service_overrides(service_overrides, available, current):
    """['NAME=N', ...] from --service -> [(name, count)]; unknown names list the available ones."""
    result = []
    for item in service_overrides:
        option = "--service %s" % item
        name, sep, count = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError("%s: expected NAME=N, as in --service hello-python=2 (0 removes it)" % option)
        if name not in available and name not in current:
            raise ConfigError("%s: unknown service %r; available: %s" % (
                option, name, ", ".join(available) or "none (add a folder under services/)"))
        result.append((_checked(option, service_name, name), int(_checked(option, whole_number(0), count))))
    return result


def _checked(option, check, value):
    try:
        return check(value)
    except Invalid as exc:
        raise ConfigError("%s: %s" % (option, exc))


def with_count(pairs, name, count):
    """SERVICE_LIST pairs with `name` set to `count`: order kept, new names last, 0 removes."""
    result = [(n, c) for n, c in pairs if n != name or count > 0]
    if count > 0:
        if name in dict(pairs):
            result = [(n, count if n == name else c) for n, c in result]
        else:
            result.append((name, count))
    return result


def collect_answers(layout, prompter, overrides=(), service_overrides=(), assume_yes=False):
    """{key: value} for every .env.default key (but FS_SSH_*) and SERVICE_LIST, in template order."""
    tmpl = template(layout)
    current = settings.load_values(layout)
    chosen = settings.parse_service_list(current.get(SERVICE_LIST))
    available = services.available(layout)
    forced = parse_overrides(overrides, tmpl.keys)
    for name, count in parse_service_overrides(service_overrides, available, dict(chosen)):
        chosen = with_count(chosen, name, count)

    answers = OrderedDict()
    if not assume_yes:
        prompter.say("Enter keeps the value in [brackets]; type %s to empty it; Ctrl-C stops "
                     "without changing anything." % CLEAR)
    for key in tmpl.keys:
        if key == SERVICE_LIST or (key.startswith(SSH_PREFIX) and key not in forced):
            continue
        check = validator_for(key, answers)
        if key in forced:
            answers[key] = _checked("--set %s=%s" % (key, forced[key]), check, forced[key])
            if not assume_yes:
                prompter.say("")
                prompter.say("%s=%s (from --set)" % (key, answers[key]))
        elif assume_yes:
            answers[key] = _current_or_fail(key, current.get(key), check)
        else:
            prompter.say("")
            for line in tmpl.comments.get(key, []):
                prompter.say(line)
            entry = current.get(key)
            answers[key] = prompter.ask(key, entry.value if entry else "", check)

    if not assume_yes:
        chosen = service_menu(prompter, available, chosen)
    answers[SERVICE_LIST] = settings.format_service_list(chosen)
    return answers


def _current_or_fail(key, entry, check):
    value = entry.value if entry else ""
    try:
        return check(value)
    except Invalid as exc:
        where = entry.path if entry else None
        raise ConfigError("%s: %s; fix it there or pass --set %s=..." % (key, exc, key),
                          where, entry.line if entry else None)


def service_menu(prompter, available, chosen):
    """The numbered service menu, repeated until Done; returns the new SERVICE_LIST pairs."""
    prompter.say("")
    prompter.say("Which services should run? Pick one by number to add it or change its "
                 "instances (0 removes it); pick Done when finished.")
    for _ in range(MAX_MENU_ROUNDS):
        counts = dict(chosen)
        names = list(available) + [name for name, _ in chosen if name not in available]
        labels = [_label(name, counts, available) for name in names] + ["Done"]
        prompter.say("")
        index = prompter.choose(labels, default=len(names))
        if index == len(names):
            return chosen
        name = names[index]
        # A short prompt: readline scrolls a line wider than the terminal sideways.
        prompter.say("How many instances of %s should run as Slurm jobs? 0 removes it." % name)
        count = int(prompter.ask("Instances of %s" % name, str(counts.get(name, 1)), whole_number(0)))
        chosen = with_count(chosen, name, count)
        prompter.say("%s: %s." % (name, "removed" if count == 0 else "%d instance%s" % (
            count, "" if count == 1 else "s")))
    raise ConfigError("the service menu got %d answers without Done" % MAX_MENU_ROUNDS)


def _label(name, counts, available):
    notes = []
    if name in counts:
        notes.append("%d instance%s" % (counts[name], "" if counts[name] == 1 else "s"))
    if name not in available:
        notes.append("not found: pick it and answer 0 to remove it")
    return "%s  [%s]" % (name, ", ".join(notes)) if notes else name


# ---------------------------------------------------------------- writing .env

class _Candidate(NamedTuple):
    """Just enough of a Layout for settings.load to read a not-yet-installed .env."""
    env_default: str
    env_file: str


def env_texts(layout, answers):
    """(old .env text or None, the text write_env would install)."""
    tmpl = template(layout)
    old = _read(os.path.realpath(layout.env_file))
    base = old if old is not None else ENV_HEADER + _without_header(tmpl.text)
    return old, envfile.updated_text(base, answers, tmpl.comments)


def write_env(layout, answers, now=time.localtime):
    """Install answers into .env atomically; returns the backup of the previous .env, or None.

    Nothing is written when nothing changes. A result settings.load refuses is never installed.
    """
    target = os.path.realpath(layout.env_file)
    old, new = env_texts(layout, answers)
    if old == new:
        return None
    tmp = "%s.tmp-%d" % (target, os.getpid())
    try:
        _write_synced(tmp, new, target if old is not None else None)
        try:
            settings.load(_Candidate(layout.env_default, tmp))
        except ConfigError as exc:
            where = layout.env_file if exc.path == tmp else exc.path
            raise ConfigError("the new .env was not installed: %s" % exc.message, where, exc.line)
        backup = _backup(target, now) if old is not None else None
        os.replace(tmp, target)
        _sync_dir(os.path.dirname(target))
        return backup
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _without_header(text):
    """The template minus its opening comment paragraph, which speaks about .env.default itself."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    if end == 0 or end == len(lines) or lines[end].strip():
        return text     # no separate opening paragraph: the first comment belongs to a key
    return "\n".join(lines[end:]) + "\n"


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigError("not a text file", path)


def _write_synced(path, text, mode_from):
    if os.path.exists(path):
        os.unlink(path)            # a leftover from a killed run with our pid
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if mode_from is not None:
        shutil.copymode(mode_from, path)


def _backup(target, now):
    stamp = time.strftime("%Y%m%d-%H%M%S", now())
    backup = "%s.bak-%s" % (target, stamp)
    for number in range(2, 100):
        if not os.path.exists(backup):
            break
        backup = "%s.bak-%s-%d" % (target, stamp, number)
    tmp = "%s.tmp-%d" % (backup, os.getpid())
    shutil.copy2(target, tmp)
    os.replace(tmp, backup)
    return backup


def _sync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass        # some filesystems (NFS, some containers) refuse fsync on a directory
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the whole step

def run_config(layout, prompter, overrides=(), service_overrides=(), assume_yes=False, say=print):
    """Ask, write .env, unpack and check the chosen services. Later steps are the caller's."""
    planned = None
    try:
        answers = collect_answers(layout, prompter, overrides, service_overrides, assume_yes)
        old, planned = env_texts(layout, answers)
        backup = write_env(layout, answers)
    except KeyboardInterrupt:
        if planned is not None and _read(os.path.realpath(layout.env_file)) == planned:
            raise ConfigCancelled("config cancelled after .env was saved; run config again to finish")
        raise ConfigCancelled()
    changed = old != planned
    say("")
    if not changed:
        say("%s is unchanged." % layout.env_file)
    elif backup:
        say("Wrote %s (the previous one is kept as %s)." % (layout.env_file, os.path.basename(backup)))
    else:
        say("Wrote %s." % layout.env_file)
    return ConfigResult(answers, backup, _load_services(layout, answers, say), changed)


def _load_services(layout, answers, say):
    entry = envfile.EnvValue(answers[SERVICE_LIST], layout.env_file, None)
    loaded, problems = [], []
    for name, count in settings.parse_service_list(entry):
        if count == 0:
            continue
        try:
            if services.unpack_bundled(layout, name):
                say("Copied the bundled service %s to %s so you can edit it." % (
                    name, os.path.join(layout.services, name)))
            loaded.append(services.load(layout, name))
        except ConfigError as exc:
            problems.append("%s: %s" % (name, exc))
        except OSError as exc:
            problems.append("%s: cannot copy it into %s: %s" % (name, layout.services, exc))
    if problems:
        raise ConfigError("your answers are saved in .env, but these services cannot be used yet; "
                          "fix them and run config again:\n  " + "\n  ".join(problems))
    return loaded
