"""The .pyz imports its modules from a private per-version copy with compiled bytecode (pyzcache), and
runs as before from the zip itself whenever that copy cannot be used."""

import os
import re
import stat
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY36 = os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python3")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pyz") / "forever_slurm.pyz")
    subprocess.run([sys.executable, os.path.join(TOP, "build_pyz.py"), "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def run(python, pyz, cache, *argv):
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run([python, "-v", pyz] + list(argv), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def loaded_from(stderr, module):
    """Where `python -v` says forever_slurm.<module> came from: a .pyc path, or the .pyz for a zip import."""
    for line in stderr.splitlines():
        if line.startswith("# code object from") and re.search(r"/forever_slurm/(__pycache__/)?%s\." % module, line):
            return line.split("from", 1)[1].strip().strip("'")
        if line.startswith("import 'forever_slurm.%s' # <zipimporter" % module):
            return line.split('"', 2)[1]
    return None


def tag(python):
    return subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                          stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()


def test_second_start_imports_compiled_modules_from_a_private_copy(pyz, tmp_path):
    cache = tmp_path / "cache"
    first = run(sys.executable, pyz, cache, "--version")
    assert first.returncode == 0 and first.stdout.startswith("forever-slurm ")
    home = cache / "forever-slurm"
    entries = [p for p in home.iterdir()]
    assert len(entries) == 1 and entries[0].name.startswith("pyz-")
    for path in (home, entries[0]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert (entries[0] / "COMPLETE").exists() and (entries[0] / ("COMPILED-" + tag(sys.executable))).exists()
    second = run(sys.executable, pyz, cache, "--version")
    assert second.returncode == 0
    source = loaded_from(second.stderr, "cli")
    assert source and source.startswith(str(entries[0])) and source.endswith(".pyc"), second.stderr[-2000:]


@pytest.mark.skipif(not os.path.exists(PY36), reason="needs pyenv's Python 3.6")
def test_two_pythons_share_one_copy_each_with_its_own_bytecode(pyz, tmp_path):
    cache = tmp_path / "cache"
    for python in (sys.executable, PY36):
        assert run(python, pyz, cache, "--version").returncode == 0
    (entry,) = list((cache / "forever-slurm").iterdir())
    assert {p.name for p in entry.iterdir() if p.name.startswith("COMPILED-")} == \
        {"COMPILED-" + tag(sys.executable), "COMPILED-" + tag(PY36)}
    again = run(PY36, pyz, cache, "--version")
    assert loaded_from(again.stderr, "cli").endswith(tag(PY36) + ".pyc")


def test_another_pyz_gets_its_own_copy(pyz, tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "other.pyz"
    other.write_bytes(open(pyz, "rb").read() + b"\0")     # trailing bytes: still a valid zip
    for path in (pyz, str(other)):
        assert run(sys.executable, path, cache, "--version").returncode == 0
    assert len(list((cache / "forever-slurm").iterdir())) == 2


@pytest.mark.parametrize("spoil", ["shared", "relative", "file"])
def test_a_cache_it_cannot_trust_or_write_falls_back_to_the_zip(pyz, tmp_path, spoil):
    cache = tmp_path / "cache"
    if spoil == "shared":
        (cache / "forever-slurm").mkdir(parents=True)
        os.chmod(str(cache / "forever-slurm"), 0o777)      # others could put code there
    elif spoil == "file":
        cache.write_text("not a directory")
    env_cache = "relative/cache" if spoil == "relative" else cache
    done = run(sys.executable, pyz, env_cache, "--version")
    assert done.returncode == 0 and done.stdout.startswith("forever-slurm ")
    assert loaded_from(done.stderr, "cli").startswith(pyz)     # imported from the zip, as before
    if spoil == "shared":
        assert list((cache / "forever-slurm").iterdir()) == []
