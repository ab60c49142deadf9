"""Shared test set-up: src/ and tests/ on sys.path, shim Slurm on PATH, a temp root."""

import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(TESTS)
SHIMS = os.path.join(TESTS, "shims")
sys.path.insert(0, os.path.join(TOP, "src"))
sys.path.insert(0, TESTS)


@pytest.fixture
def shim_state(tmp_path, monkeypatch):
    """Fake squeue/sbatch/scontrol/scancel first on PATH, with their state in a temp dir."""
    state_dir = tmp_path / "shim-state"
    state_dir.mkdir()
    monkeypatch.setenv("FS_SHIM_STATE", str(state_dir))
    monkeypatch.setenv("PATH", SHIMS + os.pathsep + os.environ["PATH"])
    for key in list(os.environ):
        if key.startswith(("SQUEUE_", "SBATCH_", "FS_SHIM_START", "FS_SHIM_TIME")):
            monkeypatch.delenv(key, raising=False)
    return state_dir


@pytest.fixture
def root(tmp_path):
    """An empty forever-slurm root directory."""
    path = tmp_path / "root"
    path.mkdir()
    return path


def write_env(root, text):
    (root / ".env").write_text(text)
