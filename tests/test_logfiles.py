"""common/logfiles: console logging for every command, a private rotated file for the long-running ones."""

import logging
import os
import stat
import sys

import pytest

from forever_slurm.common import logfiles, settings


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
