"""fsutil: the one atomic write, backup name and bounded read."""

import os
import stat

import pytest

from forever_slurm.common import fsutil
from forever_slurm.common.errors import ConfigError


def test_atomic_write_replaces_and_sets_mode_whatever_the_umask(tmp_path):
    target = tmp_path / "f.txt"
    old = os.umask(0)
    try:
        assert fsutil.atomic_write(str(target), "one") is True
    finally:
        os.umask(old)
    assert target.read_text() == "one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert fsutil.atomic_write(str(target), "one", only_if_changed=True) is False
    assert fsutil.atomic_write(str(target), b"two", mode=0o644, only_if_changed=True) is True
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        fsutil.atomic_write(str(target), "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_temp_in_other_dir(tmp_path):
    watch, tmp = tmp_path / "watch", tmp_path / "tmp"
    watch.mkdir()
    fsutil.atomic_write(str(watch / "a.yml"), "x", tmp_dir=str(tmp))
    assert (watch / "a.yml").read_text() == "x"
    assert list(tmp.iterdir()) == []


def test_backup_names_never_collide(tmp_path):
    target = tmp_path / ".env"
    target.write_text("A=1\n")
    first = fsutil.backup(str(target), now=0)
    second = fsutil.backup(str(target), now=0)
    assert first != second and os.path.basename(second).endswith("-2")
    assert open(first).read() == open(second).read() == "A=1\n"
    assert fsutil.backup(str(tmp_path / "missing")) is None


def test_read_text_file_is_lenient_and_refuses_non_files(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"ok \xff\n")
    assert fsutil.read_text_file(str(good)) == "ok \ufffd\n"
    with pytest.raises(FileNotFoundError):
        fsutil.read_text_file(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="directory"):
        fsutil.read_text_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    with pytest.raises(ConfigError, match="FIFO"):
        fsutil.read_text_file(str(fifo))
    with pytest.raises(ConfigError, match="device"):
        fsutil.read_text_file("/dev/zero")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(ConfigError, match="2000 bytes"):
        fsutil.read_text_file(str(big), limit=1000)


def test_make_private_dir(tmp_path):
    path = tmp_path / "a" / "b"
    old = os.umask(0)
    try:
        fsutil.make_private_dir(str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_create_once_without_hard_links_falls_back_to_an_exclusive_create(tmp_path, monkeypatch):
    import errno as errno_mod

    def no_links(src, dst):
        raise OSError(errno_mod.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    path = str(tmp_path / "first")
    assert fsutil.create_once(path, "one") is True
    assert fsutil.create_once(path, "two") is False
    assert open(path).read() == "one" and os.listdir(str(tmp_path)) == ["first"]
