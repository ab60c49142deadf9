"""The `config` conversation: ask for each .env.default key and the services, then write .env safely.

Contract: collect_answers() asks (or, with assume_yes, takes current values) and returns
{key: value}; write_env() installs them into .env atomically, after validating the result
with settings.load, keeping a dated backup; run_config() does both and unpacks the chosen
services. Ctrl-C or Ctrl-D at any question raises ConfigCancelled before anything is written.
"""

import difflib
import os
import re
import shlex
import sys
from collections import OrderedDict
from typing import List, NamedTuple, Optional

from ..common import envfile, fsutil, resources, services, settings, validate
from ..common.errors import ConfigError, ForeverError

SERVICE_LIST = "SERVICE_LIST"
SSH_PREFIX = "FS_SSH_"          # asked by `config --ssh`, as in the original config.sh
CLEAR = "-"                     # typed alone: make the value empty
MAX_MENU_ROUNDS = 200           # a runaway script of answers stops instead of looping forever
ENV_HEADER = ("# forever-slurm settings, written by `config`. Edit by hand or run config again;\n"
              "# any key left out takes its value from .env.default.\n")
HOST_ENV_HEADER = ("# forever-slurm settings of the login node %s only, written by `config --host-only`: each key\n"
                   "# here wins over .env on that host. Edit by hand or run config --host-only --set KEY=VALUE.\n")


class ConfigCancelled(ForeverError):
    """Ctrl-C or Ctrl-D during `config`; cli prints the message and exits 130."""

    exit_code = 130

    def __init__(self, message="config cancelled; nothing was changed"):
        super().__init__(message)


Invalid = validate.Invalid     # an answer a validator refuses; str() is the reason shown before asking again


class ConfigResult(NamedTuple):
    answers: dict                       # key -> value, as written to .env
    env_backup: Optional[str]           # path of the previous .env, or None
    services: list                      # ServiceDef of each chosen service with instances > 0
    env_changed: bool                   # .env was written (created or changed)


# ---------------------------------------------------------------- validators
# Each takes the unquoted answer and returns the text to store, or raises Invalid. They are
# settings.KEYS' own checks, so an accepted answer never fails settings.load later.

def as_answer(check):
    """A prompt validator from a settings check: the answer's .env spelling."""
    def answer(value):
        return validate.as_text(check(value))
    return answer


any_text = validate.any_text
port = as_answer(validate.port)
yes_no = as_answer(validate.yes_no)


def instances(maximum):
    """An instance count N or a MIN-MAX range (settings.Instances), bounded by FS_MAX_INSTANCES as
    settings.load bounds SERVICE_LIST."""
    def count(value):
        value = value.strip()
        if not value:
            raise Invalid("empty; type a number, or MIN-MAX")
        wanted = settings.parse_instances(value)
        if wanted.high > maximum:
            raise Invalid("%s: instances go from 0 to %d (FS_MAX_INSTANCES=%d is the most; raise it for more)"
                          % (value, maximum, maximum))
        return wanted
    return count


service_name = settings.service_name


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


VALIDATORS = dict((key, as_answer(spec.check)) for key, spec in settings.KEYS.items())
VALIDATORS["FS_TRAEFIK_BIN"] = executable_or_empty      # config also checks that the file is there


def max_instances(answers):
    """FS_MAX_INSTANCES as answered so far (else its default), the bound of every instance count."""
    try:
        return settings.KEYS["FS_MAX_INSTANCES"].check(answers.get("FS_MAX_INSTANCES", ""))
    except Invalid:
        return settings.DEFAULT_MAX_INSTANCES


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


def words(text):
    """A typed list of words (quotes allowed) as one space-separated value."""
    try:
        return " ".join(shlex.split(text))
    except ValueError as exc:
        raise Invalid("cannot read that: %s" % exc)


# ---------------------------------------------------------------- prompting

def until_valid(answer, say, prompt, tries):
    """answer() until it returns: each Invalid reason is said and the question asked again, up to tries.

    The one retry loop of `config`: the prompter's questions and the ssh setup's both go through it."""
    for _ in range(tries):
        try:
            return answer()
        except Invalid as exc:
            say("  ! %s" % exc)
    raise ConfigError("%s: no valid answer after %d tries" % (prompt, tries))


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

    def ask(self, prompt, default="", validate=None, show_default=True, several=False):
        """The answer to `prompt`; Enter keeps `default`, '-' empties it; re-asks with the reason.

        several: the answer is a list of words (login nodes), kept as one space-separated value.
        """
        def answer():
            typed = self._read("%s [%s]: " % (prompt, default) if show_default else "%s: " % prompt)
            value = default if typed.strip() == "" else (
                "" if typed.strip() == CLEAR else words(typed) if several else unquote(typed))
            return validate(value) if validate else value
        return until_valid(answer, self.say, prompt, self.max_attempts)

    def choose(self, options, prompt="Pick a number or a name", default=None, title=None):
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
            raise Invalid("type a number from 1 to %d, or a name as listed" % len(options))
        return self.ask(prompt, "" if default is None else str(default + 1), pick, show_default=default is not None)

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


# ---------------------------------------------------------------- .env.default: the keys and their help

class EnvDefaults(NamedTuple):
    """What .env.default says: its text, its keys in order, and the comment above each key."""
    text: str               # the root's .env.default, else the bundled one
    keys: List[str]         # bundled keys in order, then the root's extra ones
    comments: dict          # key -> comment lines above it (the root's wins)


def env_defaults(layout):
    """The root's .env.default over the bundled one: keys from both, the root's comments win."""
    bundled = resources.read_text("env.default") or ""
    own = envfile.read_text(layout.env_default) or ""
    keys = _keys(bundled)
    keys += [key for key in _keys(own) if key not in keys]
    comments = envfile.comments_by_key(bundled)
    comments.update((k, v) for k, v in envfile.comments_by_key(own).items() if v)
    return EnvDefaults(own or bundled, keys, comments)


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


def parse_service_overrides(service_overrides, available, current, maximum=settings.DEFAULT_MAX_INSTANCES):
    """['NAME=N' or 'NAME=MIN-MAX', ...] from --service -> [(name, Instances)]; unknown names list the
    available ones."""
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
        result.append((_checked(option, service_name, name), _checked(option, instances(maximum), count)))
    return result


def _checked(option, check, value):
    try:
        return check(value)
    except Invalid as exc:
        raise ConfigError("%s: %s" % (option, exc))


def with_count(pairs, name, count):
    """SERVICE_LIST pairs with `name` set to `count` (Instances): order kept, new names last, 0 removes."""
    result = [(n, c) for n, c in pairs if n != name or count.high > 0]
    if count.high > 0:
        if name in dict(pairs):
            result = [(n, count if n == name else c) for n, c in result]
        else:
            result.append((name, count))
    return result


def collect_answers(layout, prompter, overrides=(), service_overrides=(), assume_yes=False):
    """{key: value} for every .env.default key (but FS_SSH_*) and SERVICE_LIST, in .env.default order."""
    defaults = env_defaults(layout)
    current = settings.load_values(layout, with_host=False)     # .env's own: .env.<host> is not copied into it
    chosen = settings.parse_service_list(current.get(SERVICE_LIST))
    available = services.available(layout)
    forced = parse_overrides(overrides, defaults.keys)
    known = OrderedDict((key, entry.value) for key, entry in current.items())
    known.update(forced)
    for name, count in parse_service_overrides(service_overrides, available, dict(chosen), max_instances(known)):
        chosen = with_count(chosen, name, count)

    answers = OrderedDict()
    if not assume_yes:
        prompter.say("Enter keeps the value in [brackets]; type %s to empty it; Ctrl-C stops "
                     "without changing anything." % CLEAR)
    keys = [key for key in defaults.keys
            if key != SERVICE_LIST and (not key.startswith(SSH_PREFIX) or key in forced)]
    general = [key for key in keys if key not in settings.SCALE_KEYS]
    for key in general:
        answers[key] = _answer(key, defaults, current, forced, answers, prompter, assume_yes)
    if not assume_yes:
        chosen = service_menu(prompter, available, chosen, max_instances(answers))
    # How services scale is asked only of someone who chose a MIN-MAX service.
    scaling = any(count.scales for _, count in chosen)
    for key in keys:
        if key in settings.SCALE_KEYS:
            answers[key] = _answer(key, defaults, current, forced, answers, prompter, assume_yes or not scaling)
    answers[SERVICE_LIST] = settings.format_service_list(chosen)
    return OrderedDict((key, answers[key]) for key in defaults.keys if key in answers)


def _answer(key, defaults, current, forced, answers, prompter, quiet):
    """One key's value: from --set, else asked with its comment, else (quiet) the current value."""
    check = validator_for(key, answers)
    if key in forced:
        value = _checked("--set %s=%s" % (key, forced[key]), check, forced[key])
        if not quiet:
            prompter.say("")
            prompter.say("%s=%s (from --set)" % (key, value))
        return value
    if quiet:
        return _current_or_fail(key, current.get(key), check)
    prompter.say("")
    for line in defaults.comments.get(key, []):
        prompter.say(line)
    entry = current.get(key)
    return prompter.ask(key, entry.value if entry else "", check)


def _current_or_fail(key, entry, check):
    value = entry.value if entry else ""
    try:
        return check(value)
    except Invalid as exc:
        where = entry.path if entry else None
        raise ConfigError("%s: %s; fix it there or pass --set %s=..." % (key, exc, key),
                          where, entry.line if entry else None)


def service_menu(prompter, available, chosen, maximum=settings.DEFAULT_MAX_INSTANCES):
    """The numbered service menu, repeated until Done; returns the new SERVICE_LIST pairs."""
    prompter.say("")
    prompter.say("Which services should run? Pick one by number to add it or change its "
                 "instances (0 removes it); pick Done when finished.")
    warned = False
    for _ in range(MAX_MENU_ROUNDS):
        counts = dict(chosen)
        names = list(available) + [name for name, _ in chosen if name not in available]
        labels = [_label(name, counts, available) for name in names] + ["Done"]
        running = any(count.high for _, count in chosen)
        prompter.say("")
        # Enter means Done only once something is chosen: pressing Enter through config must not end with nothing.
        index = prompter.choose(labels, default=len(names) if running else None)
        if index == len(names):
            if running or warned:
                return chosen
            warned = True
            prompter.say("  ! No service is chosen, so no job would run. Pick a service, or Done again "
                         "to go on without any.")
            continue
        name = names[index]
        # A short prompt: readline scrolls a line wider than the terminal sideways.
        prompter.say("How many instances of %s should run as Slurm jobs? 0 removes it; MIN-MAX (as in 0-4) "
                     "scales with demand." % name)
        current = counts.get(name)
        count = prompter.ask("Instances of %s" % name, current.text if current else "1", instances(maximum))
        chosen = with_count(chosen, name, count)
        prompter.say("%s: %s." % (name, "removed" if count.high == 0 else count.describe()))
    raise ConfigError("the service menu got %d answers without Done" % MAX_MENU_ROUNDS)


def _label(name, counts, available):
    notes = []
    if name in counts:
        notes.append(counts[name].describe())
    if name not in available:
        notes.append("not found: pick it and answer 0 to remove it")
    return "%s  [%s]" % (name, ", ".join(notes)) if notes else name


# ---------------------------------------------------------------- writing .env

def env_texts(layout, answers):
    """(old .env text or None, the text write_env would install)."""
    defaults = env_defaults(layout)
    old = envfile.read_text(os.path.realpath(layout.env_file))
    base = old if old is not None else ENV_HEADER + _without_header(defaults.text)
    return old, envfile.updated_text(base, answers, defaults.comments)


def write_env(layout, answers, now=None):
    """Install answers into .env atomically, mode 0600; returns the backup of the previous .env, or None.

    Nothing is written when nothing changes. A result settings.load refuses is never installed.
    The file is ours to write and may hold ssh details, so it is private whatever it was before.
    """
    old, new = env_texts(layout, answers)
    return _install(layout.env_file, old, new, lambda: settings.load(layout, env_text=new), now)


def host_env_texts(layout, updates):
    """(old .env.<host> text or None, the text write_host_env would install)."""
    old = envfile.read_text(os.path.realpath(layout.host_env_file))
    return old, envfile.updated_text(old if old is not None else HOST_ENV_HEADER % layout.host, updates)


def write_host_env(layout, updates, now=None):
    """Install updates into .env.<host> (this host's own values, over .env's), as write_env does .env;
    returns the backup of the previous file, or None."""
    old, new = host_env_texts(layout, updates)
    return _install(layout.host_env_file, old, new, lambda: settings.load(layout, host_text=new), now)


def _install(path, old, new, check, now=None):
    """Write new over path (its real file) once check() accepts it, keeping a backup of old."""
    if old == new:
        return None
    try:
        check()
    except ConfigError as exc:
        raise ConfigError("the new %s was not installed: %s" % (os.path.basename(path), exc.message),
                          exc.path, exc.line)
    target = os.path.realpath(path)
    backup = fsutil.backup(target, now) if old is not None else None
    fsutil.atomic_write(target, new, mode=fsutil.PRIVATE_FILE)
    return backup


def _without_header(text):
    """The .env.default text minus its opening comment paragraph, which speaks about .env.default itself."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    if end == 0 or end == len(lines) or lines[end].strip():
        return text     # no separate opening paragraph: the first comment belongs to a key
    return "\n".join(lines[end:]) + "\n"


# ---------------------------------------------------------------- the whole step

def run_config(layout, prompter, overrides=(), service_overrides=(), assume_yes=False, say=print, review=None):
    """Ask, write .env, unpack and check the chosen services. Later steps are the caller's.

    review(answers) -> answers, when given, checks them against the machine (free ports) before
    anything is written, and may ask again."""
    planned = None
    try:
        answers = collect_answers(layout, prompter, overrides, service_overrides, assume_yes)
        if review:
            answers = review(answers)
        old, planned = env_texts(layout, answers)
        backup = write_env(layout, answers)
    except KeyboardInterrupt:
        if planned is not None and envfile.read_text(os.path.realpath(layout.env_file)) == planned:
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
    return ConfigResult(answers, backup, chosen_services(layout, answers[SERVICE_LIST], say), changed)


def chosen_services(layout, service_list, say):
    """The ServiceDef of each service in the SERVICE_LIST text with instances, bundled ones unpacked
    into services/ first; ConfigError listing every one that cannot be used."""
    entry = envfile.EnvValue(service_list, layout.env_file, None)
    loaded, problems = [], []
    for name, count in settings.parse_service_list(entry):
        if count.high == 0:
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
