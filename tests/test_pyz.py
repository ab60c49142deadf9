"""The built forever_slurm.pyz, copied alone into an empty directory, on every Python from 3.6 here."""

import glob
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from fakes import SHIMS, shim_calls

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYENV = os.path.expanduser("~/.pyenv/versions")


SYSTEM_PYTHON = "/usr/bin/python3"


def _version(path):
    done = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          stdout=subprocess.PIPE, universal_newlines=True, timeout=30)
    return done.stdout.strip()


def pythons():
    """(label, path) of the system python3 (the distribution's, as on a stock login node), each
    python3.x >= 3.6 under ~/.pyenv/versions, and the one running the tests (the project's .venv)."""
    found = [("system-%s" % _version(SYSTEM_PYTHON), SYSTEM_PYTHON)] if os.path.exists(SYSTEM_PYTHON) else []
    found.append(("running-%d.%d" % sys.version_info[:2], sys.executable))
    for path in sorted(glob.glob(os.path.join(PYENV, "3.*", "bin", "python3"))):
        version = os.path.basename(os.path.dirname(os.path.dirname(path)))
        major_minor = ".".join(version.split(".")[:2])
        if tuple(int(x) for x in major_minor.split(".")) >= (3, 6):
            found.append(("pyenv-" + major_minor, path))
    seen, unique = set(), []
    for label, path in found:
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append((label, path))
    return unique


def build(tmp_path, name):
    out = str(tmp_path / name)
    subprocess.run([sys.executable, os.path.join(TOP, "build_pyz.py"), "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="module")
def built_pyz(tmp_path_factory):
    """One build for the module's tests: test_build_is_reproducible shows every build is the same."""
    return build(tmp_path_factory.mktemp("pyz"), "built.pyz")


def test_build_is_reproducible(tmp_path):
    first, second = build(tmp_path, "a.pyz"), build(tmp_path, "b.pyz")
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    data = open(first, "rb").read()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    import zipfile
    names = zipfile.ZipFile(first).namelist()
    assert names == sorted(names) and "__main__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "forever_slurm/data/services/hello-python/hello-python.sub" in names
    assert "forever_slurm/data/env.default" in names


@pytest.mark.optional
def test_old_python_gets_one_clear_line(built_pyz):
    old = os.path.join(PYENV, "2.7.18", "bin", "python")
    if not os.path.exists(old):
        pytest.skip("no Python 2.7 here")
    pyz = built_pyz
    done = subprocess.run([old, pyz, "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "needs Python 3.6 or newer" in done.stderr


@pytest.mark.parametrize("label,python", pythons())
def test_pyz_alone_submits_and_routes(tmp_path, built_pyz, label, python):
    pyz_src = built_pyz
    root = tmp_path / "empty"
    root.mkdir()
    shutil.copy2(pyz_src, str(root / "forever_slurm.pyz"))
    state = tmp_path / "shim"
    env = dict(os.environ, PATH=SHIMS + os.pathsep + os.environ["PATH"], FS_SHIM_STATE=str(state))
    env.pop("FOREVER_ROOT", None)
    cmd = [python, "-I", "-S", str(root / "forever_slurm.pyz")]
    elsewhere = str(tmp_path)

    version = subprocess.run(cmd + ["--version"], stdout=subprocess.PIPE, universal_newlines=True,
                             cwd=elsewhere, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("forever-slurm ")

    (root / ".env").write_text('SERVICE_LIST="hello-python/2"\n')
    done = subprocess.run(cmd + ["run", "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, cwd=elsewhere, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(cmd + ["run", "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, cwd=elsewhere, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    calls = shim_calls(state)
    # One job per cycle, the second avoiding the first one's node (spread).
    assert [c[0] for c in calls] == ["squeue", "sinfo", "scontrol", "sbatch"] * 2
    assert "--exclude=node1" in calls[7]
    assert (root / ".work" / "traefik-watch" / "hello-python.yml").exists()
    assert (root / "services" / "hello-python" / "hello-python.sub").exists()   # bundled, unpacked
    assert os.access(str(root / "freeport.sh"), os.X_OK)

    (state / "fail-squeue").write_text("slurm_load_jobs error: Unable to contact slurm controller\n")
    failed = subprocess.run(cmd + ["run", "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, cwd=elsewhere, env=env, timeout=120)
    assert failed.returncode == 1 and "Slurm does not answer" in failed.stderr


def test_vermin_finds_nothing_newer_than_36():
    vermin = shutil.which("vermin")
    if not vermin:
        pytest.skip("vermin is not installed")
    done = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.6-", os.path.join(TOP, "src")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert done.returncode == 0, done.stdout
