"""Tests for settings: one table of checks for run, status, check and config; private files whatever the umask."""

import io
import logging
import os
import random
import stat
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import pytest

from forever_slurm.common import logfiles, services, settings, validate
from forever_slurm import cli
from forever_slurm.setup import configure, sshsetup
from forever_slurm.observe import status
from forever_slurm.common.errors import ConfigError

FIELDS = {key: key[3:].lower() for key in settings.KEYS}
FIELDS["FS_SSH_LOGIN_NODE"] = "ssh_login_nodes"
TEXT_KEYS = [key for key, spec in settings.KEYS.items() if spec.check is validate.any_text]

# Values a hand-edited .env had, which took down or misled the tool (issue 11 §5).
BAD_VALUES = [
    ("FS_SLEEP_INTERVAL", "nan"), ("FS_SLEEP_INTERVAL", "inf"), ("FS_PROBE_INTERVAL", "1e999"),
    ("FS_SLEEP_INTERVAL", "\u0661\u0662"), ("FS_TRAEFIK_PORT", "\u0661\u0662\u0660\u0661\u0663"),
    ("FS_SURGE", "\uff11"), ("FS_PROBE_TIMEOUT", "-1"), ("FS_DRAIN_SECONDS", "1_0"), ("FS_TRAEFIK_BIND", ""),
    ("FS_TRAEFIK_BIND", "-oops"), ("FS_SPREAD", "maybe"), ("FS_SLEEP_INTERVAL", ""), ("FS_SSH_PORT", "0"),
    ("FS_MAX_INSTANCES", "0"), ("FS_RENEW_LEAD", "nan"), ("FS_SLURM_TIMEOUT", "9" * 5000),
    # ssh reads a leading '-' in user@node as an option: -oProxyCommand would run a command.
    ("FS_SSH_USER", "-oProxyCommand=touch x"), ("FS_SSH_LOGIN_NODE", "login1 -oProxyCommand=x"),
]


@pytest.fixture
def layout(tmp_path):
    return settings.Layout(str(tmp_path / "root"))


def write_env(layout, text):
    os.makedirs(layout.root, exist_ok=True)
    with open(layout.env_file, "w", encoding="utf-8") as handle:
        handle.write(text)


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


# ---------------------------------------------------------------- one validation everywhere

@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_load_refuses_a_bad_value_naming_file_and_line(layout, key, value):
    write_env(layout, 'SERVICE_LIST=""\n# mine\n%s="%s"\n' % (key, value))
    with pytest.raises(ConfigError) as caught:
        settings.load(layout, environ={})
    assert (caught.value.path, caught.value.line) == (layout.env_file, 3)
    assert key in caught.value.message


@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_config_refuses_the_same_values(layout, key, value):
    with pytest.raises(Invalid_or_config()):
        configure.VALIDATORS[key](value)
    with pytest.raises(ConfigError, match="--set %s=" % key):
        configure.collect_answers(layout, configure.Prompter(_no_input, _no_input),
                                  overrides=["%s=%s" % (key, value)], assume_yes=True)


def Invalid_or_config():
    return (validate.Invalid, ConfigError)


def _no_input(prompt=""):
    raise AssertionError("asked %r" % prompt)


def test_a_prompt_refuses_nan_and_an_empty_bind_then_takes_a_good_answer(layout):
    answers = {"FS_SLEEP_INTERVAL": ["nan", "inf", "\u0661\u0662", "5"], "FS_TRAEFIK_BIND": ["-", "0.0.0.0"]}
    shown = []

    done = str(len(services.available(layout)) + 1)     # the menu's last entry, Done (twice: nothing chosen)

    def typed(prompt):
        for key, queue in answers.items():
            if prompt.startswith(key + " [") and queue:
                return queue.pop(0)
        return done if prompt.startswith("Pick") else ""
    got = configure.collect_answers(layout, configure.Prompter(typed, shown.append, interactive=True))
    assert (got["FS_SLEEP_INTERVAL"], got["FS_TRAEFIK_BIND"]) == ("5", "0.0.0.0")
    assert sum(1 for line in shown if line.startswith("  ! ") and "No service" not in line) == 4


def test_prompt_validators_are_the_settings_checks():
    """For every key and many texts: config accepts exactly what settings.load accepts, as the same value."""
    rng = random.Random(5)
    texts = ["", "0", "1", "10", "2.5", ".5", "1024", "13013", "65535", "65536", "nan", "inf", "1e3", "yes",
             "no", "on", "maybe", "127.0.0.1", "::1", "login1", "-x", "\u0661", "16", "17", "1000", "1001"]
    texts += ["%d" % rng.randint(0, 100000) for _ in range(100)] + ["%.2f" % rng.uniform(0, 5000) for _ in range(100)]
    for key, spec in settings.KEYS.items():
        if key == "FS_TRAEFIK_BIN":
            continue        # config also checks the file exists; settings cannot (another machine)
        for text in texts:
            try:
                expected = spec.check(text)
            except validate.Invalid:
                expected = validate.Invalid
            try:
                answer = configure.VALIDATORS[key](text)
            except validate.Invalid:
                assert expected is validate.Invalid, (key, text)
                continue
            assert expected is not validate.Invalid, (key, text)
            assert spec.check(answer) == expected, (key, text, answer)


def _forget_calls(shim_state):
    path = os.path.join(str(shim_state), "calls.log")
    if os.path.exists(path):
        os.remove(path)


def test_empty_bind_is_refused_by_check_and_run(layout, shim_state):
    write_env(layout, 'FS_TRAEFIK_BIND=\nSERVICE_LIST="hello-python/1"\n')
    code, out, _ = run_cli("--root", layout.root, "check")
    assert code == 1 and "%s:1: FS_TRAEFIK_BIND" % layout.env_file in out
    _forget_calls(shim_state)       # check asks squeue whether it answers; run must not even do that
    code, _, err = run_cli("--root", layout.root, "run", "--once")
    assert code == 1 and "%s:1: FS_TRAEFIK_BIND" % layout.env_file in err
    assert not os.path.exists(os.path.join(str(shim_state), "calls.log"))   # not one Slurm call
    assert not os.path.exists(layout.work)


def test_a_billion_instances_are_refused_by_check_run_and_config(layout, shim_state):
    write_env(layout, 'SERVICE_LIST="hello-python/1000000000"\n')
    code, out, _ = run_cli("--root", layout.root, "check")
    assert code == 1 and "%s:1: SERVICE_LIST: hello-python/1000000000" % layout.env_file in out
    assert "FS_MAX_INSTANCES=16" in out
    _forget_calls(shim_state)
    code, _, err = run_cli("--root", layout.root, "run", "--once")
    assert code == 1 and "FS_MAX_INSTANCES" in err
    assert not os.path.exists(os.path.join(str(shim_state), "calls.log"))
    with pytest.raises(ConfigError, match="hello-python=17"):
        configure.collect_answers(layout, configure.Prompter(_no_input, _no_input),
                                  service_overrides=["hello-python=17"], assume_yes=True)
    with pytest.raises(ConfigError, match="FS_MAX_INSTANCES"):
        configure.write_env(layout, {"SERVICE_LIST": "hello-python/1000000000"})


def test_the_menu_refuses_more_instances_than_the_maximum(layout):
    name = configure.services.available(layout)[0]
    menu = configure.services.available(layout)
    answers = {"FS_MAX_INSTANCES": ["4"], "Pick a number": [str(menu.index(name) + 1), ""],
               "Instances of": ["5", "1000000000", "4"]}
    shown = []

    def typed(prompt):
        for prefix, queue in answers.items():
            if prompt.startswith(prefix) and queue:
                return queue.pop(0)
        return ""
    got = configure.collect_answers(layout, configure.Prompter(typed, shown.append, interactive=True))
    assert got["SERVICE_LIST"] == "%s/4" % name and got["FS_MAX_INSTANCES"] == "4"
    assert sum(1 for line in shown if "from 0 to 4" in line) == 2


def test_a_raised_maximum_allows_more(layout):
    write_env(layout, 'FS_MAX_INSTANCES=100\nSERVICE_LIST="a/50 b"\n')
    conf = settings.load(layout, environ={})
    assert (conf.desired, conf.max_instances) == ({"a": 50, "b": 1}, 100)
    write_env(layout, 'FS_MAX_INSTANCES=1001\n')
    with pytest.raises(ConfigError, match="from 1 to 1000"):
        settings.load(layout, environ={})


def test_check_lists_every_bad_value_with_its_line(layout):
    write_env(layout, "FS_SLEEP_INTERVAL=nan\nFS_SURGE=1\nFS_TRAEFIK_BIND=\nFS_SPREAD=perhaps\n")
    conf, problems = settings.check(layout, environ={})
    assert conf is None
    assert [(p.path, p.line) for p in problems] == [(layout.env_file, 1), (layout.env_file, 3), (layout.env_file, 4)]
    code, out, _ = run_cli("--root", layout.root, "check")
    assert code == 1 and "3 problem(s) found" in out


def test_the_two_traefik_ports_must_differ_and_the_error_points_at_the_edited_line(layout):
    write_env(layout, "# x\nFS_TRAEFIK_PORT=13014\n")
    with pytest.raises(ConfigError, match="must differ") as caught:
        settings.load(layout, environ={})
    assert (caught.value.path, caught.value.line) == (layout.env_file, 2)


def test_login_nodes_load_as_a_list_of_host_names(layout):
    write_env(layout, 'FS_SSH_LOGIN_NODE="login1  10.0.0.2 ::1"\nFS_SSH_USER=me.x\n')
    conf = settings.load(layout, environ={})
    assert (conf.ssh_login_nodes, conf.ssh_user) == (["login1", "10.0.0.2", "::1"], "me.x")


def test_defaults_load_to_their_typed_values(layout):
    conf = settings.load(layout, environ={"USER": "me"})
    assert (conf.traefik_bind, conf.sleep_interval, conf.spread, conf.max_instances, conf.renew_lead,
            conf.ssh_port, conf.ssh_user) == ("127.0.0.1", 60.0, True, settings.DEFAULT_MAX_INSTANCES, None, 22, "me")
    assert set(settings.load_values(layout)) >= set(settings.KEYS), "every key is in the bundled .env.default"


I = settings.Instances


@pytest.mark.parametrize("word,parsed", [("a/2", ("a", I(2, 2))), ("a", ("a", I(1, 1))), ("a.b_c-d/0", ("a.b_c-d", I(0, 0))),
                                         ("a/0-4", ("a", I(0, 4, True))), ("a/2-2", ("a", I(2, 2, True)))])
def test_parse_service_word(word, parsed):
    assert settings.parse_service_word(word) == parsed


@pytest.mark.parametrize("word", ["a/", "a/x", "a/-1", "a/1.5", "a/4-2", "a/0-0", "a/1-", "a/-", "a/1-2-3", "a/0--4", "a/\u0662", "/2", "-a/1", "a b/1", "a/1/2", "a/%s" % ("9" * 5000)])
def test_parse_service_word_refuses(word):
    with pytest.raises(validate.Invalid):
        settings.parse_service_word(word)


def test_a_service_listed_twice_is_refused(layout):
    write_env(layout, 'SERVICE_LIST="a/1 a/2"\n')
    with pytest.raises(ConfigError, match="listed twice"):
        settings.load(layout, environ={})


# ---------------------------------------------------------------- status says a broken .env

def test_status_reports_a_broken_env_instead_of_hiding_it(layout):
    write_env(layout, "FS_SURGE=1\nFS_SLEEP_INTERVAL=inf\n")
    report = status.collect(layout)
    assert report["settings_error"].startswith("%s:2: FS_SLEEP_INTERVAL" % layout.env_file)
    text = status.render(report)
    assert "settings: BROKEN: %s:2: FS_SLEEP_INTERVAL" % layout.env_file in text
    code, out, _ = run_cli("--root", layout.root, "status")
    assert code == 3 and "BROKEN" in out      # and no loop runs here
    assert sorted(os.listdir(layout.root)) == [".env"]          # status wrote nothing


def test_status_of_a_good_env_has_no_settings_error(layout):
    write_env(layout, "FS_SURGE=1\n")
    report = status.collect(layout)
    assert report["settings_error"] is None and "BROKEN" not in status.render(report)


def test_status_and_check_report_an_unreadable_env_without_a_traceback(layout):
    os.makedirs(layout.env_file)
    code, out, _ = run_cli("--root", layout.root, "check")
    assert code == 1 and layout.env_file in out and "directory" in out
    code, out, _ = run_cli("--root", layout.root, "status")
    assert code == 3 and "BROKEN" in out and "directory" in out


# ---------------------------------------------------------------- randomised garbage

GARBAGE = ["0", "1", "2", "9", ".", "5", "e", "E", "+", "-", "_", " ", "nan", "inf", "\u0661", "\uff15", "\u00b2",
           "yes", "no", "x", ":", "[", "]", "/", "'", '"', "$", "#", "\\", "\t", "127.0.0.1", "::1", "a-b",
           "hello-python", "/16", "/17", "\x1e", "\xe9", "\u2028"]


def test_random_values_for_every_key_load_typed_or_fail_at_their_line(layout):
    """Every key, 300 random values each: a valid typed value that reads back the same, or a
    ConfigError naming .env and the value's line; never another exception."""
    rng = random.Random(20261202)
    keys = list(settings.KEYS) + ["SERVICE_LIST"]
    tally = {"loaded": 0, "refused": 0}
    for key in keys:
        for _ in range(300):
            junk = "".join(rng.choice(GARBAGE) for _ in range(rng.randint(0, 5)))
            line = rng.randint(2, 4)
            body = "# before\n" + "FS_SURGE=1\n" * (line - 2) + "%s=%s\n" % (key, junk)
            with open(_ensure(layout), "wb") as handle:
                handle.write(body.encode("utf-8"))
            try:
                conf = settings.load(layout, environ={})
            except ConfigError as exc:
                tally["refused"] += 1
                assert (exc.path, exc.line) == (layout.env_file, line), (key, junk, str(exc))
                continue
            tally["loaded"] += 1
            _assert_typed(conf, key, settings.load_values(layout, environ={})[key].value)
    assert tally["loaded"] > 200 and tally["refused"] > 2000, tally


def _ensure(layout):
    os.makedirs(layout.root, exist_ok=True)
    return layout.env_file


def _assert_typed(conf, key, text):
    if key == "SERVICE_LIST":
        assert all(0 <= count.low <= count.high <= conf.max_instances for _, count in conf.service_list), text
        assert settings.parse_service_list(settings.envfile.EnvValue(
            settings.format_service_list(conf.service_list), "f", 1), conf.max_instances) == conf.service_list
        return
    value = getattr(conf, FIELDS[key])
    if key in TEXT_KEYS:
        assert isinstance(value, (str, list)), (key, text)
        return
    spec = settings.KEYS[key]
    assert spec.check(validate.as_text(value)) == value, (key, text, value)
    wanted = float if spec.default is None else type(spec.default)     # FS_RENEW_LEAD: None or seconds
    assert value is None if spec.default is None and text.strip() == "" else type(value) is wanted, (key, text)


def test_settings_has_one_field_per_key_in_keys_order(layout):
    """Settings is generated from KEYS: a key added there is a field, typed, with no second list to edit."""
    assert settings.Settings._fields == ("service_list",) + tuple(FIELDS[k] for k in settings.KEYS) + ("raw",)
    write_env(layout, "FS_SURGE=3\nFS_SSH_LOGIN_NODE='a b'\nSERVICE_LIST='x/2'\n")
    conf = settings.load(layout)
    assert (conf.surge, conf.ssh_login_nodes, conf.desired) == (3, ["a", "b"], {"x": 2})
    assert conf.raw["FS_SURGE"] == "3"


def test_path_keys_are_expanded_in_settings_but_not_in_raw(layout, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    write_env(layout, "FS_SSH_KEY_PATH=~/.ssh/k\nFS_TRAEFIK_BIN=~/bin/traefik\n")
    conf = settings.load(layout)
    assert (conf.ssh_key_path, conf.traefik_bin) == ("/home/someone/.ssh/k", "/home/someone/bin/traefik")
    assert conf.raw["FS_SSH_KEY_PATH"] == "~/.ssh/k"


# ---------------------------------------------------------------- private whatever the umask

@pytest.mark.parametrize("mask", [0, 0o022])
def test_work_and_its_folders_are_0700(layout, mask):
    os.makedirs(layout.work)
    os.chmod(layout.work, 0o755)          # left by an older version
    with umask(mask):
        layout.make_dirs()
    folders = [layout.work, layout.watch, layout.staging_tmp, layout.slurm_output, layout.log, layout.bin]
    assert {path: stat.S_IMODE(os.stat(path).st_mode) for path in folders} == {path: 0o700 for path in folders}


@pytest.mark.parametrize("mask", [0, 0o022])
def test_logs_are_0600_also_after_rotation(layout, mask, restore_logging):
    os.makedirs(layout.log)
    old_log = os.path.join(layout.log, "loop.log")
    with open(old_log, "w") as handle:
        handle.write("from an older version\n")
    os.chmod(old_log, 0o644)
    with umask(mask):
        logfiles.to_file(layout, "loop.log")
        handler = logging.getLogger().handlers[-1]
        handler.maxBytes = 200
        for number in range(20):
            logging.getLogger("forever_slurm").warning("line %d %s", number, "x" * 40)
        handler.flush()
    logs = sorted(name for name in os.listdir(layout.log) if name.startswith("loop.log"))
    assert logs == ["loop.log", "loop.log.1", "loop.log.2", "loop.log.3"]
    assert {name: stat.S_IMODE(os.stat(os.path.join(layout.log, name)).st_mode) for name in logs} == \
        {name: 0o600 for name in logs}
    assert stat.S_IMODE(os.stat(layout.log).st_mode) == 0o700


@pytest.mark.parametrize("mask", [0, 0o022])
def test_run_once_leaves_work_private(layout, shim_state, mask, restore_logging):
    write_env(layout, 'SERVICE_LIST="hello-python/1"\nFS_SPREAD=no\n')
    with umask(mask):
        code, _, err = run_cli("--root", layout.root, "run", "--once")
    assert code == 0, err
    for folder, dirs, files in os.walk(layout.work):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
    assert stat.S_IMODE(os.stat(os.path.join(layout.log, "loop.log")).st_mode) == 0o600


@pytest.mark.parametrize("mask", [0, 0o022])
def test_config_writes_env_0600(layout, mask):
    with umask(mask):
        configure.run_config(layout, configure.Prompter(_no_input, _no_input), overrides=["FS_SURGE=2"],
                             assume_yes=True, say=lambda text="": None)
    assert stat.S_IMODE(os.stat(layout.env_file).st_mode) == 0o600


@pytest.mark.skipif(not sshsetup.shutil.which("ssh-keygen"), reason="needs ssh-keygen (openssh-client)")
def test_a_new_ssh_key_and_its_folder_are_private_under_umask_0(tmp_path):
    key = tmp_path / "keys" / "tunnel"
    with umask(0):
        sshsetup.ensure_key(str(key))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert (tmp_path / "keys" / "tunnel.pub").read_text().startswith("ssh-ed25519 ")


if sys.version_info < (3, 6):      # pragma: no cover
    raise RuntimeError("tests need Python 3.6+")

