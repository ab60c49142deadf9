"""traefik: template validation, golden dynamic and static configs, atomic writes, stale-file cleanup."""

import copy
import glob
import os

import pytest

from original_tool import ORIGINAL_YML

from forever_slurm import settings, traefik, yamlish
from forever_slurm.errors import ConfigError
from forever_slurm.traefik import Server

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GOLDEN = os.path.join(HERE, "golden", "traefik")
GOLDEN_ROOT = "/srv/forever root"
BUNDLED = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(REPO, "services", "*", "*.yml")))

SERVER_SETS = {
    "0-servers": [],
    "1-server": [Server("http://node001:41234")],
    "2-servers": [Server("http://node001:41234"), Server("http://node002:39811")],
    "draining": [Server("http://node001:41234", 0), Server("http://node002:39811")],
}

ORIGINAL = ORIGINAL_YML


def check_golden(name, text):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    with open(path, encoding="utf-8") as handle:
        assert text == handle.read(), "%s differs; review it, then UPDATE_GOLDEN=1 to rewrite" % path


def bundled(service):
    return traefik.load_template(os.path.join(REPO, "services", service, service + ".yml"), service)


def write(tmp_path, text, name="svc.yml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def lb_of(rendered):
    data = yamlish.load(rendered, "rendered")
    (service,) = data["http"]["services"].values()
    return service["loadBalancer"]


def test_bundled_templates_exist():
    assert BUNDLED, "services/*/*.yml should hold the bundled templates"


@pytest.mark.parametrize("service", BUNDLED)
@pytest.mark.parametrize("case", sorted(SERVER_SETS))
def test_bundled_templates_render_golden(service, case):
    servers = SERVER_SETS[case]
    text = traefik.render_dynamic(service, bundled(service), servers)
    check_golden("%s-%s.yml" % (service, case), text)
    assert text.splitlines()[0] == "# written by forever-slurm; edit services/%s/ instead" % service
    expected = [{"url": s.url, "weight": 0} if s.weight == 0 else {"url": s.url} for s in servers]
    assert lb_of(text)["servers"] == expected
    assert "xxxxx" not in text


def test_default_template_golden():
    template = traefik.default_template("hello", health_path="/health")
    text = traefik.render_dynamic("hello", template, SERVER_SETS["2-servers"])
    check_golden("default-hello-2-servers.yml", text)
    data = yamlish.load(text, "rendered")["http"]
    assert data["routers"]["hello-router"]["rule"] == "PathPrefix(`/hello`)"
    assert data["middlewares"]["hello-retry"] == {"retry": {"attempts": 3}}
    assert data["middlewares"]["hello-strip"] == {"stripPrefix": {"prefixes": ["/hello"]}}
    assert traefik.health_path(template) == "/health"
    assert traefik.health_status(template) is None
    assert traefik.health_path(traefik.default_template("hello")) == "/"


def test_static_config_golden(tmp_path):
    (tmp_path / ".env").write_text("FS_TRAEFIK_PORT=23013\nFS_TRAEFIK_PING_PORT=23014\nFS_TRAEFIK_BIND=127.0.0.1\n")
    loaded = settings.load(settings.Layout(str(tmp_path)))
    text = traefik.render_static(loaded, settings.Layout(GOLDEN_ROOT))
    check_golden("static.yml", text)
    data = yamlish.load(text, "static")
    assert data["entryPoints"] == {"web": {"address": "127.0.0.1:23013"}, "traefik": {"address": "127.0.0.1:23014"}}
    assert "api" not in data
    assert data["providers"]["file"] == {"directory": GOLDEN_ROOT + "/.work/traefik-watch", "watch": True}
    assert data["accessLog"]["format"] == "json"
    kept = data["accessLog"]["fields"]["names"]
    assert {"DownstreamStatus", "Duration", "ServiceName", "ServiceURL", "RequestPath", "RouterName",
            "StartUTC"} <= set(kept)


def test_static_config_brackets_an_ipv6_bind(tmp_path):
    (tmp_path / ".env").write_text("FS_TRAEFIK_BIND=::1\nFS_TRAEFIK_PORT=23013\n")
    loaded = settings.load(settings.Layout(str(tmp_path)))
    data = yamlish.load(traefik.render_static(loaded, settings.Layout(GOLDEN_ROOT), "DEBUG"), "static")
    assert data["entryPoints"]["web"]["address"] == "[::1]:23013"
    assert data["log"]["level"] == "DEBUG"
    with pytest.raises(ConfigError):
        traefik.render_static(loaded, settings.Layout(GOLDEN_ROOT), "LOUD")


def test_original_retry_name_is_namespaced(tmp_path):
    template = traefik.load_template(write(tmp_path, ORIGINAL), "hello-python")
    text = traefik.render_dynamic("hello-python", template, SERVER_SETS["1-server"])
    check_golden("original-hello-python-1-server.yml", text)
    http = yamlish.load(text, "rendered")["http"]
    assert set(http["middlewares"]) == {"hello-python-retry", "hello-python-strip-hello-python-prefix"}
    assert http["routers"]["hello-python-router"]["middlewares"] == [
        "hello-python-retry", "hello-python-strip-hello-python-prefix"]
    assert traefik.health_path(template) == "/test"
    assert traefik.health_status(template) is None
    assert template.lines[("http", "services", "hello-python", "loadBalancer", "healthCheck", "path")] == \
        line_of(ORIGINAL, 'path: "/test"')
    # The template itself is untouched, so the next render starts from the same input.
    assert "retry" in template.data["http"]["middlewares"]


def test_two_original_style_services_do_not_share_retry(tmp_path):
    other = ORIGINAL.replace("hello-python", "other")
    names = set()
    for service, text in (("hello-python", ORIGINAL), ("other", other)):
        template = traefik.load_template(write(tmp_path, text, service + ".yml"), service)
        rendered = yamlish.load(traefik.render_dynamic(service, template, []), service)
        names.update(rendered["http"]["middlewares"])
    assert len(names) == 4


def test_chain_references_are_renamed(tmp_path):
    text = ORIGINAL.replace("        - retry\n        - strip-hello-python-prefix\n", "        - both\n").replace(
        "  middlewares:\n    retry:",
        "  middlewares:\n    both:\n      chain:\n        middlewares: [retry, strip-hello-python-prefix]\n    retry:")
    template = traefik.load_template(write(tmp_path, text), "hello-python")
    http = yamlish.load(traefik.render_dynamic("hello-python", template, []), "r")["http"]
    assert http["routers"]["hello-python-router"]["middlewares"] == ["hello-python-both"]
    assert http["middlewares"]["hello-python-both"]["chain"]["middlewares"] == [
        "hello-python-retry", "hello-python-strip-hello-python-prefix"]


def test_health_status_from_bundled_template():
    statuses = {service: traefik.health_status(bundled(service)) for service in BUNDLED}
    paths = {service: traefik.health_path(bundled(service)) for service in BUNDLED}
    # The llama templates expect 401 (an API key is set); hello-python accepts any 2xx/3xx.
    assert statuses.get("llama-cpp-server") == 401
    assert statuses.get("hello-python") is None
    assert paths.get("llama-cpp-server") == "/v1/models"


def test_health_status_accepts_a_quoted_number(tmp_path):
    text = ORIGINAL.replace('#status: "401"', 'status: "401"')
    assert traefik.health_status(traefik.load_template(write(tmp_path, text), "hello-python")) == 401


def test_keys_match_case_insensitively_like_traefik(tmp_path):
    text = ORIGINAL.replace("healthCheck:", "healthcheck:").replace("loadBalancer:", "LoadBalancer:")
    template = traefik.load_template(write(tmp_path, text), "hello-python")
    assert traefik.health_path(template) == "/test"
    servers = lb_of_upper(traefik.render_dynamic("hello-python", template, SERVER_SETS["1-server"]))
    assert servers == [{"url": "http://node001:41234"}]


def lb_of_upper(text):
    data = yamlish.load(text, "r")
    return data["http"]["services"]["hello-python"]["LoadBalancer"]["servers"]


def test_render_does_not_mutate_the_template():
    template = bundled(BUNDLED[0])
    before = copy.deepcopy(template.data)
    traefik.render_dynamic(BUNDLED[0], template, SERVER_SETS["2-servers"])
    assert template.data == before


def line_of(text, needle):
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("change, needle, words", [
    (("interval: \"900s\"", "interval: \"{{ 900 }}s\""), "{{", "Go templates"),
    (("      loadBalancer:", "      loadBalancr:"), "loadBalancr", "unknown key 'loadBalancr'"),
    (("          timeout: \"1s\"", "          timeout: \"1s\"\n          retries: 2"), "retries", "unknown key"),
    (("      rule:", "      rules:"), "rules:", "unknown key 'rules'"),
    (("        attempts: 3", "        attempts: 0"), "attempts", "above 0"),
    (("      retry:\n", "      retryy:\n"), "retryy", "unknown key 'retryy'"),
    (("      service: hello-python", "      service: nope"), "service: nope", "not defined in this file"),
    (("        - retry\n", "        - missing\n"), "- missing", "middleware 'missing'"),
    (("          path: \"/test\"", "          path: \"test\""), "path:", "starting with '/'"),
    (("  services:", "  tcp:\n  services:"), "tcp:", "unknown key 'tcp'"),
    (("          - url: \"http://yyyyy:54321\"", "          - url: \"http://yyyyy:54321\"\n            wieght: 0"),
     "wieght", "unknown key 'wieght'"),
    (("      entryPoints:\n        - web", "      entryPoints: web"), "entryPoints", "list of names"),
    (("        - web\n", "        - web\n        - websecure\n"), "websecure", "entryPoint 'websecure'"),
    (("        - \"/hello-python\"", "        - \"/hello-python\"\n            - bad"), "- bad", "bad indentation"),
])
def test_template_errors_name_the_line(tmp_path, change, needle, words):
    old, new = change
    assert old in ORIGINAL
    text = ORIGINAL.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        traefik.load_template(path, "hello-python")
    err = caught.value
    assert words in err.message
    assert err.path == path
    assert err.line == line_of(text, needle)


@pytest.mark.parametrize("text, words", [
    ("- a\n- b\n", "mapping"),
    ("tcp:\n  routers: {}\n", "unknown key 'tcp'"),
    ("http:\n  services:\n    x:\n      loadBalancer:\n        servers: []\n", "http.routers is missing"),
    ("http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: x\n", "http.services is missing"),
    ("http:\n  routers:\n    r:\n      service: x\n  services:\n    x:\n      loadBalancer: {}\n", "needs a rule"),
    ("http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: w\n  services:\n    w:\n"
     "      weighted:\n        services: []\n", "fills one loadBalancer"),
    ("http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: x\n  services:\n    x:\n"
     "      loadBalancer: {}\n      weighted: {}\n", "exactly one"),
    ("name: hello\nport: 8080\n", "unknown key 'name'"),
    ("", "no 'http:' section"),
])
def test_yml_that_is_not_a_template(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        traefik.load_template(write(tmp_path, text), "svc")
    assert words in caught.value.message
    assert str(caught.value).startswith(str(tmp_path))


def test_missing_template_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        traefik.load_template(str(tmp_path / "absent.yml"), "svc")
    assert "cannot read" in str(caught.value)


@pytest.mark.parametrize("url, ok", [
    ("http://node001:41234", True),
    ("https://n-1.cluster.example:443", True),
    ("http://10.0.0.5:8080", True),
    ("http://[::1]:8080", True),
    ("http://xxxxx", False),
    ("http://node:0", False),
    ("http://node:70000", False),
    ("ftp://node:21", False),
    ("http://node:80/path", False),
    ("http://user@node:80", False),
    ("http://{{x}}:80", False),
    ("node:80", False),
    ("", False),
    (None, False),
])
def test_server_urls(url, ok):
    assert traefik.valid_server_url(url) is ok


def test_render_rejects_bad_servers():
    template = bundled(BUNDLED[0])
    for server in (Server("http://xxxxx"), Server("http://n:1", -1), Server("http://n:1", True)):
        with pytest.raises(ConfigError):
            traefik.render_dynamic(BUNDLED[0], template, [server])


def test_render_keeps_weights_other_than_one():
    template = traefik.default_template("w")
    servers = lb_of(traefik.render_dynamic("w", template, [Server("http://a:1", 3), Server("http://b:2")]))["servers"]
    assert servers == [{"url": "http://a:1", "weight": 3}, {"url": "http://b:2"}]


def test_default_template_rejects_odd_input():
    with pytest.raises(ConfigError):
        traefik.default_template("has space")
    with pytest.raises(ConfigError):
        traefik.default_template("ok", health_path="{{ .x }}")
    with pytest.raises(ConfigError):
        traefik.default_template("ok", health_path="health")


def test_write_if_changed(tmp_path):
    watch, tmp = tmp_path / "watch", tmp_path / "tmp"
    watch.mkdir()
    target = str(watch / "svc.yml")
    assert traefik.write_if_changed(target, "one\n", str(tmp)) is True
    first = os.stat(target)
    assert traefik.write_if_changed(target, "one\n", str(tmp)) is False
    assert os.stat(target).st_ino == first.st_ino
    assert traefik.write_if_changed(target, "two\n", str(tmp)) is True
    with open(target) as handle:
        assert handle.read() == "two\n"
    assert os.listdir(str(watch)) == ["svc.yml"]
    assert os.listdir(str(tmp)) == []
    assert os.stat(target).st_mode & 0o777 == 0o644


def test_remove_stale_only_touches_our_files(tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    for name in ("keep.yml", "gone.yml"):
        (watch / name).write_text(traefik.render_dynamic("keep", traefik.default_template("keep"), []))
    (watch / "users-own.yml").write_text("http: {}\n")
    (watch / "notes.txt").write_text("")
    (watch / "sub").mkdir()
    assert traefik.remove_stale(str(watch), ["keep.yml"]) == ["gone.yml"]
    assert sorted(os.listdir(str(watch))) == ["keep.yml", "notes.txt", "sub", "users-own.yml"]
    assert traefik.remove_stale(str(tmp_path / "absent"), []) == []


def test_dynamic_name():
    assert traefik.dynamic_name("hello-python") == "hello-python.yml"
