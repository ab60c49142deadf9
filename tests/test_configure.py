"""Tests for the `config` conversation: prompts, validators, the service menu, and .env written safely."""

import glob
import os
import shutil
import time

import pytest

from forever_slurm.setup import configure
from forever_slurm.common import envfile, services, settings
from forever_slurm.common.errors import ConfigError

from fakes import Script, Terminal, free_ports, no_input

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def asked_keys(layout, scaling=False):
    """The keys config asks, in order; the scale keys only when a MIN-MAX service is chosen."""
    return [k for k in configure.env_defaults(layout).keys
            if k != configure.SERVICE_LIST and not k.startswith(configure.SSH_PREFIX)
            and (scaling or k not in settings.SCALE_KEYS)]


def menu_number(layout, name, extra=()):
    """The number the service menu shows for `name` (available services first, then missing ones)."""
    names = services.available(layout) + [n for n in extra if n not in services.available(layout)]
    return str(names.index(name) + 1)


def done_number(layout, extra=()):
    names = services.available(layout) + [n for n in extra if n not in services.available(layout)]
    return str(len(names) + 1)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def read(path):
    with open(path) as handle:
        return handle.read()


def leftovers(root):
    return sorted(n for n in os.listdir(root) if ".tmp-" in n or ".bak-" in n)


@pytest.fixture
def layout(tmp_path):
    return settings.Layout(str(tmp_path))


# ---------------------------------------------------------------- prompting

def test_enter_keeps_every_default(layout):
    script = Script()
    answers = configure.collect_answers(layout, script.prompter())
    current = settings.load_values(layout)
    for key in asked_keys(layout):
        assert answers[key] == current[key].value, key
        assert script.asked(key + " [%s]" % current[key].value), key
    assert answers[configure.SERVICE_LIST] == ""
    assert not [k for k in answers if k.startswith(configure.SSH_PREFIX)]


def test_comments_of_env_default_are_shown_before_their_key(layout):
    script = Script()
    configure.collect_answers(layout, script.prompter())
    comments = configure.env_defaults(layout).comments
    lines = script.lines
    for key in asked_keys(layout):
        prompt_at = next(i for i, line in enumerate(lines) if line.startswith(key + " ["))
        shown = comments.get(key, [])
        assert lines[prompt_at - len(shown):prompt_at] == shown, key


def test_bad_port_is_asked_again_with_a_reason(layout):
    script = Script({"FS_TRAEFIK_PORT": ["80", "70000", "http", "14000"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers["FS_TRAEFIK_PORT"] == "14000"
    assert len(script.asked("FS_TRAEFIK_PORT")) == 4
    reasons = [line for line in script.lines if "1024 to 65535" in line]
    assert len(reasons) == 3
    assert all(len(r.splitlines()) == 1 for r in reasons)


def test_ping_port_must_differ_from_the_traefik_port(layout):
    script = Script({"FS_TRAEFIK_PORT": ["15000"], "FS_TRAEFIK_PING_PORT": ["15000", "15001"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert (answers["FS_TRAEFIK_PORT"], answers["FS_TRAEFIK_PING_PORT"]) == ("15000", "15001")
    assert "must differ from FS_TRAEFIK_PORT" in script.output


@pytest.mark.parametrize("key,bad,good", [
    ("FS_SLEEP_INTERVAL", "0", "5"),
    ("FS_PROBE_TIMEOUT", "soon", "1.5"),
    ("FS_SURGE", "1.5", "2"),
    ("FS_SPREAD", "maybe", "n"),
    ("FS_TRAEFIK_BIND", "'127.0.0.1 x'", "0.0.0.0"),
])
def test_each_key_is_checked_on_entry(layout, key, bad, good):
    script = Script({key: [bad, good]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers[key] == configure.VALIDATORS[key](good)
    assert len(script.asked(key)) == 2


def test_a_value_can_be_emptied_with_a_dash_where_empty_is_allowed(layout):
    write(layout.env_file, "FS_RENEW_LEAD=300\n")
    script = Script({"FS_RENEW_LEAD": ["-"], "FS_SLEEP_INTERVAL": ["-", "7"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers["FS_RENEW_LEAD"] == ""
    assert answers["FS_SLEEP_INTERVAL"] == "7"


def test_traefik_bin_must_be_an_executable_file(layout, tmp_path):
    plain = tmp_path / "not-executable"
    plain.write_text("")
    binary = tmp_path / "traefik"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    script = Script({"FS_TRAEFIK_BIN": [str(tmp_path / "missing"), str(plain), str(binary)]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers["FS_TRAEFIK_BIN"] == str(binary)
    assert "no file at" in script.output and "not executable" in script.output


def test_unknown_keys_need_quotes_around_spaces(layout):
    write(layout.env_default, "# A label for my jobs.\nMY_LABEL=plain\n")
    script = Script({"MY_LABEL": ["two words", '"two words"']})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers["MY_LABEL"] == "two words"
    assert "must be quoted" in script.output
    assert "# A label for my jobs." in script.lines
    configure.write_env(layout, answers)
    assert settings.load_values(layout)["MY_LABEL"].value == "two words"


def test_too_many_bad_answers_stop_with_an_error(layout):
    script = Script({"FS_TRAEFIK_PORT": ["1"] * 50})
    with pytest.raises(ConfigError, match="FS_TRAEFIK_PORT"):
        configure.collect_answers(layout, configure.Prompter(script, script.say, True, max_attempts=3))
    assert len(script.asked("FS_TRAEFIK_PORT")) == 3


def test_a_piped_session_echoes_each_answer_after_its_prompt():
    lines = []
    answers = iter(["abc", "2000"])
    prompter = configure.Prompter(lambda prompt: next(answers), lines.append, interactive=False)
    assert prompter.ask("PORT", "1500", configure.port) == "2000"
    assert lines[0] == "PORT [1500]: abc" and lines[-1] == "PORT [1500]: 2000"


# ---------------------------------------------------------------- the service menu

def test_menu_adds_changes_and_removes_services(layout):
    available = services.available(layout)
    assert len(available) >= 2, "needs two bundled services"
    first, second = available[0], available[1]
    os.makedirs(os.path.join(layout.services, "my-own"))
    write(layout.env_file, 'SERVICE_LIST="%s/2 my-own/1"\n' % first)
    script = Script({
        "Pick a number": [menu_number(layout, "my-own"), menu_number(layout, first),
                          menu_number(layout, second), done_number(layout)],
        "Instances of my-own [": ["3"],
        "Instances of %s [" % first: ["0"],
        "Instances of %s [" % second: ["1"],
    })
    answers = configure.collect_answers(layout, script.prompter())
    assert answers[configure.SERVICE_LIST] == "my-own/3 %s/1" % second
    assert "  %s) %s  [2 instances]" % (menu_number(layout, first), first) in script.lines
    assert "%s: removed." % first in script.lines
    defaults = [p for p in script.prompts if p.startswith("Instances of")]
    assert defaults[0].endswith("[1]: ") and defaults[1].endswith("[2]: ")


def test_menu_keeps_existing_choices_on_done(layout):
    name = services.available(layout)[0]
    write(layout.env_file, 'SERVICE_LIST="%s/2"\n' % name)
    answers = configure.collect_answers(layout, Script().prompter())
    assert answers[configure.SERVICE_LIST] == "%s/2" % name


def test_menu_asks_again_for_a_bad_number(layout):
    name = services.available(layout)[0]
    script = Script({"Pick a number": ["99", "zero", name, ""],
                     "Instances of": ["-1", "two", "2"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers[configure.SERVICE_LIST] == "%s/2" % name
    assert len(script.asked("Pick a number")) == 4
    assert len(script.asked("Instances of")) == 3
    # Names work as well as numbers, and the menu says so (it had said "type a number").
    assert script.asked("Pick a number")[0] == "Pick a number or a name: "
    assert "  ! type a number from 1 to %d, or a name as listed" % (len(services.available(layout)) + 1) in script.lines


def test_menu_lists_a_chosen_service_that_no_longer_exists_so_it_can_be_removed(layout):
    write(layout.env_file, 'SERVICE_LIST="gone-away/2"\n')
    script = Script({"Pick a number": [menu_number(layout, "gone-away", ["gone-away"])],
                     "Instances of gone-away": ["0"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers[configure.SERVICE_LIST] == ""
    assert any("gone-away" in line and "not found" in line for line in script.lines)


def test_enter_in_the_menu_is_not_done_while_nothing_is_chosen(layout):
    script = Script({"Pick a number": ["", "Done", "Done"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers[configure.SERVICE_LIST] == ""
    assert script.asked("Pick a number") == ["Pick a number or a name: "] * 3
    assert "type a number from 1 to" in script.output
    assert "No service is chosen, so no job would run" in script.output


def test_enter_in_the_menu_is_done_once_a_service_is_chosen(layout):
    name = services.available(layout)[0]
    script = Script({"Pick a number": [menu_number(layout, name), ""], "Instances of": ["2"]})
    answers = configure.collect_answers(layout, script.prompter())
    assert answers[configure.SERVICE_LIST] == "%s/2" % name
    assert script.asked("Pick a number")[-1] == "Pick a number or a name [%s]: " % done_number(layout)
    assert "No service is chosen" not in script.output


# ---------------------------------------------------------------- --yes, --set, --service

def test_yes_asks_nothing_and_applies_set_and_service(layout):
    name = services.available(layout)[0]
    answers = configure.collect_answers(
        layout, configure.Prompter(no_input, no_input), overrides=["FS_TRAEFIK_PORT=14000", "FS_SPREAD=no"],
        service_overrides=["%s=2" % name], assume_yes=True)
    configure.write_env(layout, answers)
    loaded = settings.load(layout)
    assert (loaded.traefik_port, loaded.spread, loaded.desired) == (14000, False, {name: 2})
    assert loaded.sleep_interval == float(settings.load_values(layout)["FS_SLEEP_INTERVAL"].value)


def test_yes_keeps_current_values_and_service_zero_removes(layout):
    first, second = services.available(layout)[:2]
    write(layout.env_file, 'FS_SURGE=3\nSERVICE_LIST="%s/1 %s/4"\n' % (first, second))
    answers = configure.collect_answers(layout, configure.Prompter(no_input, no_input),
                                        service_overrides=["%s=0" % first], assume_yes=True)
    assert answers["FS_SURGE"] == "3"
    assert answers[configure.SERVICE_LIST] == "%s/4" % second


@pytest.mark.parametrize("overrides,service_overrides,message", [
    (["FS_TRAEFIK_PORT=80"], [], "--set FS_TRAEFIK_PORT=80"),
    (["FS_TRAEFIK_PROT=14000"], [], "did you mean FS_TRAEFIK_PORT"),
    (["FS_TRAEFIK_PORT"], [], "expected KEY=VALUE"),
    (["SERVICE_LIST=a/1"], [], "--service"),
    (["FS_TRAEFIK_PING_PORT=13013", "FS_TRAEFIK_PORT=13013"], [], "must differ"),
    ([], ["no-such-service=1"], "available: "),
    ([], ["hello=two"], "--service hello=two"),
    ([], ["hello"], "expected NAME=N"),
])
def test_bad_options_name_the_option(layout, overrides, service_overrides, message):
    with pytest.raises(ConfigError) as caught:
        configure.collect_answers(layout, configure.Prompter(no_input, no_input), overrides,
                                  service_overrides, assume_yes=True)
    assert message in str(caught.value)
    assert not os.path.exists(layout.env_file)


def test_unknown_service_error_lists_the_available_ones(layout):
    with pytest.raises(ConfigError) as caught:
        configure.collect_answers(layout, configure.Prompter(no_input, no_input),
                                  service_overrides=["no-such-service=1"], assume_yes=True)
    assert all(name in str(caught.value) for name in services.available(layout))


def test_yes_refuses_a_bad_current_value_naming_file_and_line(layout):
    write(layout.env_file, "# mine\nFS_TRAEFIK_PORT=80\n")
    with pytest.raises(ConfigError) as caught:
        configure.collect_answers(layout, configure.Prompter(no_input, no_input), assume_yes=True)
    assert (caught.value.path, caught.value.line) == (layout.env_file, 2)
    assert "--set FS_TRAEFIK_PORT=" in str(caught.value)


# ---------------------------------------------------------------- writing .env

def test_first_write_starts_from_the_template_with_its_comments(layout):
    answers = configure.collect_answers(layout, configure.Prompter(no_input, no_input),
                                        overrides=["FS_SURGE=2"], assume_yes=True)
    assert configure.write_env(layout, answers) is None
    text = read(layout.env_file)
    for key, lines in configure.env_defaults(layout).comments.items():
        for line in lines:
            assert line in text, key
    assert settings.load(layout).surge == 2
    assert leftovers(layout.root) == []


def test_a_change_keeps_the_previous_env_as_a_dated_backup(layout):
    old = '# my notes\nMY_OWN="keep me"\nFS_SURGE=1\n'
    write(layout.env_file, old)
    answers = configure.collect_answers(layout, configure.Prompter(no_input, no_input),
                                        overrides=["FS_SURGE=4"], assume_yes=True)
    when = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    backup = configure.write_env(layout, answers, now=when)
    assert os.path.basename(backup) == ".env.bak-%s" % time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    assert read(backup) == old
    new = read(layout.env_file)
    assert "# my notes" in new
    assert envfile.parse(new, "x")["MY_OWN"].value == "keep me"
    assert envfile.parse(new, "x")["FS_SURGE"].value == "4"
    again = configure.write_env(layout, dict(answers, FS_SURGE="5"), now=when)
    assert again != backup and read(again) == new


def test_nothing_is_written_when_nothing_changes(layout):
    answers = configure.collect_answers(layout, configure.Prompter(no_input, no_input), assume_yes=True)
    configure.write_env(layout, answers)
    before = os.stat(layout.env_file)
    time.sleep(0.01)
    assert configure.write_env(layout, answers) is None
    after = os.stat(layout.env_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert leftovers(layout.root) == []


def test_an_env_that_settings_refuse_is_never_installed(layout):
    write(layout.env_file, "FS_SURGE=1\n")
    with pytest.raises(ConfigError) as caught:
        configure.write_env(layout, {"FS_TRAEFIK_PORT": "80"})
    assert "not installed" in str(caught.value) and caught.value.path == layout.env_file
    assert read(layout.env_file) == "FS_SURGE=1\n"
    assert leftovers(layout.root) == []


@pytest.mark.parametrize("umask", [0, 0o022])
@pytest.mark.parametrize("before", [None, 0o644, 0o666])
def test_env_written_by_config_is_private_whatever_the_umask(layout, umask, before):
    if before is not None:
        write(layout.env_file, "FS_SURGE=1\n")
        os.chmod(layout.env_file, before)
    old = os.umask(umask)
    try:
        backup = configure.write_env(layout, {"FS_SURGE": "2"})
    finally:
        os.umask(old)
    assert os.stat(layout.env_file).st_mode & 0o777 == 0o600
    assert settings.load(layout).surge == 2
    if before is not None:
        assert read(backup) == "FS_SURGE=1\n"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, EOFError])
def test_ctrl_c_or_ctrl_d_leaves_env_untouched(layout, interrupt):
    write(layout.env_file, "FS_SURGE=1\n")
    script = Script({"FS_TRAEFIK_PORT": ["14000"], "FS_SPREAD": [interrupt]})
    with pytest.raises(configure.ConfigCancelled) as caught:
        configure.run_config(layout, script.prompter(), say=script.say)
    assert caught.value.exit_code == 130
    assert str(caught.value) == "config cancelled; nothing was changed"
    assert read(layout.env_file) == "FS_SURGE=1\n"
    assert leftovers(layout.root) == []
    assert not os.path.exists(layout.services)


def test_ctrl_c_in_the_service_menu_leaves_env_untouched(layout):
    script = Script({"Pick a number": [menu_number(layout, services.available(layout)[0])],
                     "Instances of": [KeyboardInterrupt]})
    with pytest.raises(configure.ConfigCancelled):
        configure.run_config(layout, script.prompter(), say=script.say)
    assert not os.path.exists(layout.env_file)


def test_ctrl_c_while_writing_leaves_env_untouched(layout, monkeypatch):
    write(layout.env_file, "FS_SURGE=1\n")

    def interrupted(*args):
        raise KeyboardInterrupt()
    monkeypatch.setattr(configure.fsutil, "backup", interrupted)
    with pytest.raises(configure.ConfigCancelled, match="nothing was changed"):
        configure.run_config(layout, configure.Prompter(no_input, no_input), overrides=["FS_SURGE=3"],
                             assume_yes=True, say=lambda text="": None)
    assert read(layout.env_file) == "FS_SURGE=1\n"
    assert leftovers(layout.root) == []


# ---------------------------------------------------------------- run_config

def test_rerunning_config_keeps_earlier_answers(layout):
    name = services.available(layout)[0]
    first = Script({"FS_TRAEFIK_PORT": ["14000"], "FS_SPREAD": ["no"],
                    "Pick a number": [menu_number(layout, name), ""], "Instances of": ["2"]})
    result = configure.run_config(layout, first.prompter(), say=first.say)
    assert result.env_changed and result.env_backup is None
    assert [s.name for s in result.services] == [name]
    assert os.path.isdir(os.path.join(layout.services, name))

    second = Script()
    again = configure.run_config(layout, second.prompter(), say=second.say)
    assert again.answers == result.answers
    assert (again.env_changed, again.env_backup) == (False, None)
    assert "unchanged" in second.output
    assert second.asked("FS_TRAEFIK_PORT [14000]") and second.asked("FS_SPREAD [no]")


def test_run_config_reports_unusable_services_after_saving_answers(layout):
    os.makedirs(os.path.join(layout.services, "broken"))
    with pytest.raises(ConfigError) as caught:
        configure.run_config(layout, configure.Prompter(no_input, no_input),
                             service_overrides=["broken=1"], assume_yes=True, say=lambda text="": None)
    assert "broken" in str(caught.value) and ".sub" in str(caught.value)
    assert settings.load(layout).desired == {"broken": 1}


# ---------------------------------------------------------------- a real terminal

DRIVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from forever_slurm import cli
# The real command a user types, minus the unit install (no systemd user session in tests).
sys.exit(cli.main(["--root", sys.argv[2], "config", "--no-install"]))
"""


def pythons():
    found = [shutil.which("python3")]
    # The .pyz must run on 3.6; drive the same session with it when one is installed.
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))[:1]
    return [p for p in found if p]


@pytest.fixture
def terminal(request):
    sessions = []

    def start(python, root, cwd=None):
        session = Terminal([python, "-c", DRIVER, SRC, root], cwd=cwd or root)
        sessions.append(session)
        return session
    yield start
    for session in sessions:
        session.kill()


@pytest.mark.parametrize("python", pythons())
def test_a_person_configures_on_a_real_terminal(layout, terminal, python):
    name = services.available(layout)[0]
    # A free ping port: config refuses a taken one, and 13014 may be taken on a shared machine.
    write(layout.env_file, "# my own note\nFS_SURGE=2\nFS_TRAEFIK_PING_PORT=%d\n" % free_ports(1)[0])
    term = terminal(python, layout.root)
    for key in asked_keys(layout):
        term.expect(key + " [")
        if key == "FS_TRAEFIK_PORT":
            term.type("80\r")
            term.expect("from 1024 to 65535")
            term.expect(key + " [")
            term.type("14000\r")
        elif key == "FS_SPREAD":
            term.type("no\r")
        else:
            term.type("\r")
    term.expect("Pick a number or a name: ")      # nothing chosen yet: Enter is not Done
    term.type("\r")
    term.expect("type a number from 1 to")
    term.expect("Pick a number or a name: ")
    term.type("42\r")
    term.expect("type a number from 1 to")
    term.expect("Pick a number")
    term.type(menu_number(layout, name) + "\r")
    term.expect("Instances of %s [" % name)
    term.type("2\r")
    term.expect("%s  [2 instances]" % name)
    term.expect("Pick a number")
    term.type("\r")
    status = term.finish()
    transcript = term.transcript()
    print(transcript)       # shown with pytest -s; the report quotes it
    assert status == 0, transcript
    assert "Not installing units (--no-install)" in transcript
    loaded = settings.load(layout)
    assert (loaded.traefik_port, loaded.spread, loaded.surge, loaded.desired) == (14000, False, 2, {name: 2})
    assert read(layout.env_file).startswith("# my own note\n")
    assert [n for n in leftovers(layout.root) if ".bak-" in n]


@pytest.mark.parametrize("python", pythons())
def test_ctrl_c_on_a_real_terminal_changes_nothing(layout, terminal, python):
    write(layout.env_file, "FS_SURGE=2\n")
    term = terminal(python, layout.root)
    term.expect("FS_TRAEFIK_PORT [")
    term.type("14000\r")
    term.expect("FS_TRAEFIK_BIND [%s]: " % settings.load_values(layout)["FS_TRAEFIK_BIND"].value)
    term.interrupt("config cancelled; nothing was changed")
    assert term.finish() == 130
    assert read(layout.env_file) == "FS_SURGE=2\n"
    assert leftovers(layout.root) == []


@pytest.mark.parametrize("python", pythons()[:1])
def test_enter_through_config_on_a_real_terminal_warns_about_zero_services(layout, terminal, python):
    write(layout.env_file, "FS_TRAEFIK_PORT=%d\nFS_TRAEFIK_PING_PORT=%d\n" % tuple(free_ports(2)))
    term = terminal(python, layout.root)
    for key in asked_keys(layout):
        term.expect(key + " [")
        term.type("\r")
    term.expect("Pick a number or a name: ")
    term.type("\r")
    term.expect("type a number from 1 to %s" % done_number(layout))
    term.expect("Pick a number or a name: ")
    term.type("Done\r")
    term.expect("No service is chosen, so no job would run")
    term.expect("Pick a number or a name: ")
    term.type("Done\r")
    term.expect("No service is chosen, so no job will run")
    assert term.finish() == 0, term.transcript()
    assert settings.load(layout).service_list == []


@pytest.mark.parametrize("python", pythons()[:1])
def test_a_mistyped_root_on_a_real_terminal_is_not_created_by_enter(tmp_path, terminal, python):
    root = tmp_path / "tpyo"
    term = terminal(python, str(root), cwd=str(tmp_path))
    term.expect("%s does not exist. Create it and set up forever-slurm there? [no]: " % root)
    term.type("\r")
    term.expect("nothing was done; pass --root")
    assert term.finish() == 1
    assert "Traceback" not in term.transcript()
    assert not root.exists()


@pytest.mark.parametrize("python", pythons()[:1])
def test_a_new_root_on_a_real_terminal_is_created_when_asked(tmp_path, terminal, python):
    root = tmp_path / "new"
    term = terminal(python, str(root), cwd=str(tmp_path))
    term.expect("Create it and set up forever-slurm there? [no]: ")
    term.type("yes\r")
    term.expect("Created %s (it did not exist)." % root)
    term.expect("FS_TRAEFIK_PORT [")
    term.interrupt("config cancelled")
    assert term.finish() == 130
    assert root.is_dir() and not (root / ".env").exists()


def test_a_min_max_service_is_kept_and_its_scale_keys_are_asked(layout):
    name = configure.services.available(layout)[0]
    script = Script({"Pick a number": [menu_number(layout, name), ""], "Instances of": ["3-1", "0-3"],
                     "FS_IDLE_SECONDS": ["120"]})
    got = configure.collect_answers(layout, script.prompter())
    assert got["SERVICE_LIST"] == "%s/0-3" % name
    assert got["FS_IDLE_SECONDS"] == "120"
    assert any("MAX must be at least MIN" in line for line in script.lines), "3-1 is refused with the reason"
    order = [p.split(" ")[0] for p in script.prompts]
    assert order.index("FS_SCALE_TARGET") > order.index("Instances"), "scale keys come after the menu"


def test_fixed_services_are_not_asked_about_scaling(layout):
    script = Script()
    configure.collect_answers(layout, script.prompter())
    assert not script.asked("FS_SCALE_TARGET")


def test_service_option_takes_a_range(layout):
    name = configure.services.available(layout)[0]
    got = configure.collect_answers(layout, Script().prompter(), service_overrides=["%s=1-4" % name],
                                    assume_yes=True)
    assert got["SERVICE_LIST"] == "%s/1-4" % name
    with pytest.raises(ConfigError, match="MIN-MAX"):
        configure.collect_answers(layout, Script().prompter(), service_overrides=["%s=4-1" % name],
                                  assume_yes=True)
