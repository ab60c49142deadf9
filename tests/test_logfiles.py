"""common/logfiles: console logging for every command, a private rotated file for the long-running ones."""

import logging
import os
import stat
import subprocess
import sys

import pytest

from forever_slurm.common import fsutil, logfiles, settings

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_console_logging_is_one_stderr_handler_at_info_or_debug(restore_logging):
    logfiles.to_console(False)
    assert restore_logging.level == logging.INFO
    assert [type(h) for h in restore_logging.handlers] == [logfiles.ConsoleHandler]
    assert restore_logging.handlers[0].stream is sys.stderr
    logfiles.to_console(True)
    assert restore_logging.level == logging.DEBUG and len(restore_logging.handlers) == 1


def test_file_logging_adds_a_private_rotating_file_and_quiets_a_non_terminal_stderr(tmp_path, restore_logging,
                                                                                  monkeypatch):
    layout = settings.Layout(str(tmp_path))
    logfiles.to_console(False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    logfiles.to_file(layout, "loop.log")
    console, handler = restore_logging.handlers
    assert isinstance(handler, logfiles.PrivateRotatingFileHandler)
    assert (handler.maxBytes, handler.backupCount) == (logfiles.MAX_BYTES, logfiles.BACKUPS)
    assert console.level == logging.WARNING
    logging.getLogger("forever_slurm").info("hello file")
    handler.flush()
    path = os.path.join(layout.log, "loop.log")
    with open(path) as handle:
        assert handle.read().endswith(" INFO hello file\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(layout.log).st_mode) == 0o700


def test_an_unwritable_log_leaves_stderr_only_and_says_so(tmp_path, restore_logging, capsys):
    layout = settings.Layout(str(tmp_path))
    os.makedirs(os.path.join(layout.log, "loop.log"))       # a folder where the file should be
    logfiles.to_console(False)
    logfiles.to_file(layout, "loop.log")
    assert len(restore_logging.handlers) == 1
    err = capsys.readouterr().err
    assert "cannot write %s" % os.path.join(layout.log, "loop.log") in err and "logging to stderr only" in err


# ---------------------------------------------------------------- logs other programs create are private too

def test_private_log_creates_0600_and_fixes_a_0644_one_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = str(tmp_path / "traefik.log")
        assert fsutil.private_log(fresh) and stat.S_IMODE(os.stat(fresh).st_mode) == 0o600
        loose = tmp_path / "forever-slurm.log"
        loose.write_text("old lines\n")
        os.chmod(str(loose), 0o644)
        assert fsutil.private_log(str(loose)) and stat.S_IMODE(loose.stat().st_mode) == 0o600
        assert loose.read_text() == "old lines\n"
        os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "link.log"))
        assert not fsutil.private_log(str(tmp_path / "link.log")) and not (tmp_path / "elsewhere").exists()
    finally:
        os.umask(old)


def test_a_rotated_access_log_is_replaced_by_a_private_empty_one_before_traefik_reopens(tmp_path):
    """Traefik creates a missing log by the umask (0644) when USR1 makes it reopen."""
    from forever_slurm.systems import traefik_logs
    path = tmp_path / "traefik-access.log"
    path.write_text("x" * 100)
    os.chmod(str(path), 0o600)
    old = os.umask(0o022)
    try:
        assert traefik_logs.rotate_if_large([str(path)], str(tmp_path / "no.pid"), max_bytes=10) == [str(path)]
    finally:
        os.umask(old)
    assert path.read_text() == "" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "traefik-access.log.1").read_text() == "x" * 100


def test_a_units_output_file_under_work_log_is_made_private_by_the_program_writing_it(tmp_path):
    """systemd's `append:` and cron's `>>` create the unit's log 0644."""
    layout = settings.Layout(str(tmp_path))
    layout.make_dirs()
    out_path = os.path.join(layout.log, "forever-slurm.log")
    with open(out_path, "w"):
        pass
    os.chmod(out_path, 0o644)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from forever_slurm.common import logfiles, settings\n"
            "logfiles.private_std_streams(settings.Layout(%r))\n" % (SRC, layout.root))
    with open(out_path, "a") as handle:
        subprocess.run([sys.executable, "-c", code], stdout=handle, stderr=handle, check=True, timeout=60)
    assert stat.S_IMODE(os.stat(out_path).st_mode) == 0o600
    elsewhere = tmp_path / "mine.log"
    elsewhere.write_text("")
    os.chmod(str(elsewhere), 0o644)
    with open(str(elsewhere), "a") as handle:
        subprocess.run([sys.executable, "-c", code], stdout=handle, stderr=handle, check=True, timeout=60)
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o644, "a file outside .work/log is the user's business"
