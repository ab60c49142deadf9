"""traefik: template validation, golden dynamic and static configs, atomic writes, stale-file cleanup."""

import copy
import glob
import os
import random
import time

import pytest

import schema_values
from original_tool import ORIGINAL_YML

from forever_slurm.common import settings, urls
from forever_slurm.systems import traefik, traefik_files, traefik_schema, yamlish
from forever_slurm.common.errors import ConfigError
from forever_slurm.systems.traefik import Server

from fakes import golden_checker

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GOLDEN_ROOT = "/srv/forever root"
BUNDLED = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(REPO, "services", "*", "*.yml")))

SERVER_SETS = {
    "0-servers": [],
    "1-server": [Server("http://node001:41234")],
    "2-servers": [Server("http://node001:41234"), Server("http://node002:39811")],
    "draining": [Server("http://node001:41234", 0), Server("http://node002:39811")],
}

ORIGINAL = ORIGINAL_YML


check_golden = golden_checker("traefik")


def bundled(service):
    return traefik_files.load_template(os.path.join(REPO, "services", service, service + ".yml"), service)


def write(tmp_path, text, name="svc.yml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def lb_of(rendered):
    data = yamlish.parse(rendered, "rendered").data
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
    data = yamlish.parse(text, "rendered").data["http"]
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
    data = yamlish.parse(text, "static").data
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
    data = yamlish.parse(traefik.render_static(loaded, settings.Layout(GOLDEN_ROOT), "DEBUG"), "static").data
    assert data["entryPoints"]["web"]["address"] == "[::1]:23013"
    assert data["log"]["level"] == "DEBUG"
    with pytest.raises(ConfigError):
        traefik.render_static(loaded, settings.Layout(GOLDEN_ROOT), "LOUD")


def test_original_retry_name_is_namespaced(tmp_path):
    template = traefik_files.load_template(write(tmp_path, ORIGINAL), "hello-python")
    text = traefik.render_dynamic("hello-python", template, SERVER_SETS["1-server"])
    check_golden("original-hello-python-1-server.yml", text)
    http = yamlish.parse(text, "rendered").data["http"]
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
        template = traefik_files.load_template(write(tmp_path, text, service + ".yml"), service)
        rendered = yamlish.parse(traefik.render_dynamic(service, template, []), service).data
        names.update(rendered["http"]["middlewares"])
    assert len(names) == 4


def test_chain_references_are_renamed(tmp_path):
    text = ORIGINAL.replace("        - retry\n        - strip-hello-python-prefix\n", "        - both\n").replace(
        "  middlewares:\n    retry:",
        "  middlewares:\n    both:\n      chain:\n        middlewares: [retry, strip-hello-python-prefix]\n    retry:")
    template = traefik_files.load_template(write(tmp_path, text), "hello-python")
    http = yamlish.parse(traefik.render_dynamic("hello-python", template, []), "r").data["http"]
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
    assert traefik.health_status(traefik_files.load_template(write(tmp_path, text), "hello-python")) == 401


def test_keys_match_case_insensitively_like_traefik(tmp_path):
    text = ORIGINAL.replace("healthCheck:", "healthcheck:").replace("loadBalancer:", "LoadBalancer:")
    template = traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert traefik.health_path(template) == "/test"
    servers = lb_of_upper(traefik.render_dynamic("hello-python", template, SERVER_SETS["1-server"]))
    assert servers == [{"url": "http://node001:41234"}]


def lb_of_upper(text):
    data = yamlish.parse(text, "r").data
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
    (("        attempts: 3", "        attempts: " + "9" * 4400), "attempts", "whole number"),
    (("        attempts: 3", "        attempts: \"%s\"" % ("9" * 4400)), "attempts", "whole number"),
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
        traefik_files.load_template(path, "hello-python")
    err = caught.value
    assert words in err.message
    assert err.path == path
    assert err.line == line_of(text, needle)


@pytest.mark.parametrize("text, words", [
    ("- a\n- b\n", "mapping"),
    ("tcp:\n  routers: {}\n", "unknown key 'tcp'"),
    ("http:\n  services:\n    x:\n      loadBalancer:\n        servers: []\n", "http.routers is missing"),
    ("http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: x\n", "http.services is missing"),
    ("http:\n  routers:\n    r:\n      service: x\n  services:\n    x:\n      loadBalancer: {servers: []}\n",
     "needs a rule"),
    ("http:\n  routers:\n    r:\n      service: x\n  services:\n    x:\n      loadBalancer: {}\n", "is empty"),
    ("http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: w\n  services:\n    w:\n"
     "      weighted:\n        services: []\n", "fills one loadBalancer"),
    ("http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: x\n  services:\n    x:\n"
     "      loadBalancer: {}\n      weighted: {}\n", "exactly one"),
    ("name: hello\nport: 8080\n", "unknown key 'name'"),
    ("", "no 'http:' section"),
])
def test_yml_that_is_not_a_template(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "svc")
    assert words in caught.value.message
    assert str(caught.value).startswith(str(tmp_path))


def test_missing_template_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(str(tmp_path / "absent.yml"), "svc")
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
    assert urls.valid_backend_url(url) is ok


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
    assert traefik_files.write_if_changed(target, "one\n", str(tmp)) is True
    first = os.stat(target)
    assert traefik_files.write_if_changed(target, "one\n", str(tmp)) is False
    assert os.stat(target).st_ino == first.st_ino
    assert traefik_files.write_if_changed(target, "two\n", str(tmp)) is True
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
    assert traefik_files.remove_stale(str(watch), ["keep.yml"]) == ["gone.yml"]
    assert sorted(os.listdir(str(watch))) == ["keep.yml", "notes.txt", "sub", "users-own.yml"]
    assert traefik_files.remove_stale(str(tmp_path / "absent"), []) == []


def test_dynamic_name():
    assert traefik.dynamic_name("hello-python") == "hello-python.yml"


# -- value types, from the schema, with seeded random values ---------------------------------------

def _parse_data(data, version=None):
    text = yamlish.dump(data)
    return text, traefik.parse_template(text, "t.yml", schema_values.SERVICE, version)


def _good_for(path, kind, rng):
    values = schema_values.good_values(kind, rng)
    if path[-2:] == ("retry", "attempts"):
        values = [v for v in values if int(traefik_schema.go_text(v)) >= 1]
    return values


LEAVES = list(schema_values.leaves())


def test_schema_leaves_cover_every_type_and_section():
    kinds = {kind for _, kind, _ in LEAVES}
    assert kinds == set(traefik_schema.TYPES)
    paths = {path for path, _, _ in LEAVES}
    for needed in [("http", "services", "svc", "loadBalancer", "healthCheck", "interval"),
                   ("http", "routers", "svc-router", "priority"),
                   ("http", "middlewares", "m-retry", "retry", "attempts"),
                   ("http", "services", "svc", "loadBalancer", "servers", 0, "weight")]:
        assert needed in paths
    assert len(LEAVES) > 100


@pytest.mark.parametrize("path, kind, since", LEAVES, ids=[_dotted for _dotted in
                                                           (".".join(map(str, p)) for p, _, _ in LEAVES)])
def test_every_schema_key_refuses_wrong_types_with_the_line(path, kind, since):
    rng = random.Random("refuse:" + ".".join(map(str, path)))
    for value in schema_values.bad_values(kind, rng):
        data = schema_values.with_value(path, value)
        text = yamlish.dump(data)
        with pytest.raises(ConfigError) as caught:
            traefik.parse_template(text, "t.yml", schema_values.SERVICE)
        err = caught.value
        line = yamlish.parse(text, "t.yml").lines[path]
        width = len(value) if isinstance(value, (list, dict)) else 0
        assert err.path == "t.yml", (path, value)
        assert err.line is not None and line <= err.line <= line + width, (path, value, str(err), line)


@pytest.mark.parametrize("path, kind, since", LEAVES, ids=[".".join(map(str, p)) for p, _, _ in LEAVES])
def test_every_schema_key_accepts_right_types(path, kind, since):
    rng = random.Random("accept:" + ".".join(map(str, path)))
    for value in _good_for(path, kind, rng):
        _, template = _parse_data(schema_values.with_value(path, value))
        rendered = traefik.render_dynamic(schema_values.SERVICE, template, [Server("http://n:1")], (3, 7, 15))
        assert yamlish.parse(rendered, "r").data["http"]
        if since:
            with pytest.raises(ConfigError) as caught:
                _parse_data(schema_values.with_value(path, value), (since[0], since[1] - 1, 9))
            assert "needs Traefik %s" % traefik_schema.version_text(since) in caught.value.message
            assert caught.value.line is not None


def test_interval_banana_is_refused_with_its_line(tmp_path):
    text = ORIGINAL.replace('interval: "900s"', 'interval: "banana"')
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert caught.value.line == line_of(text, "banana")
    assert "duration" in caught.value.message
    assert str(caught.value).startswith("%s:%d: " % (tmp_path / "svc.yml", caught.value.line))


@pytest.mark.parametrize("interval, ok", [("10s", True), ("500ms", True), (10, True), ("10", True), ("1m30s", True),
                                          ("banana", False), ("10sec", False), ("1.5", False), (1.5, False)])
def test_durations_follow_go(tmp_path, interval, ok):
    text = ORIGINAL.replace('interval: "900s"', "interval: %s" % yamlish.dump(interval).strip())
    if ok:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    else:
        with pytest.raises(ConfigError):
            traefik_files.load_template(write(tmp_path, text), "hello-python")


def test_random_strings_with_control_characters_or_braces_are_refused():
    rng = random.Random(11)
    string_leaves = [(p, k) for p, k, _ in LEAVES if k in ("string", "path")]
    for _ in range(200):
        path, kind = rng.choice(string_leaves)
        word = "/" + "".join(rng.choice("abc/-_") for _ in range(rng.randint(0, 8)))
        bad = rng.choice(["\x00", "\x07", "\n", "\r", "\x1b", "\x7f", "\x85", "\ud800", "\ufeff", "{{"])
        at = rng.randint(1, len(word))
        data = schema_values.with_value(path, word[:at] + bad + word[at:])
        text = yamlish.dump(data)
        with pytest.raises(ConfigError) as caught:
            traefik.parse_template(text, "t.yml", schema_values.SERVICE)
        assert caught.value.line == yamlish.parse(text, "t.yml").lines[path], (path, repr(bad))


def test_control_characters_in_names_are_refused():
    data = schema_values.with_value(("http", "middlewares", "bad\x01name", "retry", "attempts"), 1)
    with pytest.raises(ConfigError) as caught:
        _parse_data(data)
    assert caught.value.line is not None


# -- one service cannot reach another ----------------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    (("      service: hello-python", "      service: api@internal"), "another provider"),
    (("      service: hello-python", "      service: other-service"), "not defined in this file"),
    (("        - retry\n", "        - noop@internal\n"), "another provider"),
    (("        - retry\n", "        - x@file\n"), "another provider"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"PathPrefix(`/`)\""), "own path"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"PathPrefix(`/other`)\""), "own path"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"Host(`x`) || PathPrefix(`/hello-python`)\""),
     "own path"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"PathPrefix(`/hello-python`)\"\n      priority: 1000"),
     "remove it"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"PathPrefix(`/hello-python`) && Method(`GET`)\""),
     "also matches other services"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"PathPrefix(`/hello-python/`)\"\n      priority: 5"),
     "priority 5 is outside"),
    (("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: \"PathPrefix(`/hello-python/`)\"\n"
      "      priority: 10000000"), "outside"),
    (("          timeout: \"1s\"", "          timeout: \"1s\"\n        serversTransport: default@internal"),
     "not allowed"),
    (("  middlewares:\n    retry:", "  middlewares:\n    other@file:\n      retry: {attempts: 1}\n    retry:"),
     "not a usable name"),
])
def test_references_and_rules_stay_inside_the_service(tmp_path, change, words):
    old, new = change
    assert old in ORIGINAL
    text = ORIGINAL.replace(old, new, 1)
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert words in caught.value.message
    assert caught.value.line is not None


def test_a_long_rule_that_does_not_parse_is_refused_at_once(tmp_path):
    """Refusing it must not take exponential time: the loop reads every template every cycle."""
    rule = "PathPrefix(" + "`/hello-python`  " * 60 + "/oops)"
    text = ORIGINAL.replace("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: '%s'" % rule)
    started = time.process_time()
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert time.process_time() - started < 1.0
    assert "own path" in caught.value.message and caught.value.line is not None


def test_confined_rules_and_priorities_that_are_accepted(tmp_path):
    for rule, priority in [("PathPrefix(`/hello-python/api`)", 500), ("Path(`/hello-python`) && Method(`GET`)", None),
                           ("(Path(`/hello-python`) || PathPrefix(`/hello-python/`)) && Header(`X`, `y`)", None),
                           ("PathPrefix(`/hello-python/`)", 27)]:
        text = ORIGINAL.replace("      rule: \"PathPrefix(`/hello-python`)\"", "      rule: %s%s" % (
            yamlish.dump(rule).strip(), "\n      priority: %d" % priority if priority else ""))
        template = traefik_files.load_template(write(tmp_path, text), "hello-python")
        http = yamlish.parse(traefik.render_dynamic("hello-python", template, []), "r").data["http"]
        router = http["routers"]["hello-python-router"]
        assert router["rule"] == rule and router.get("priority") == priority, (rule, priority)


def test_every_name_is_namespaced_and_references_follow(tmp_path):
    text = ORIGINAL.replace("hello-python-router:", "web:").replace("service: hello-python", "service: backend") \
        .replace("    hello-python:\n      loadBalancer:", "    backend:\n      loadBalancer:")
    template = traefik_files.load_template(write(tmp_path, text), "hello-python")
    http = yamlish.parse(traefik.render_dynamic("hello-python", template, []), "r").data["http"]
    assert set(http["routers"]) == {"hello-python-web"}
    # The balancer takes the service's own name, so the access log's ServiceName names the service.
    assert set(http["services"]) == {"hello-python"}
    assert http["routers"]["hello-python-web"]["service"] == "hello-python"


def test_two_services_with_the_same_names_render_disjoint_names(tmp_path):
    same = ORIGINAL.replace("hello-python-router:", "router:").replace("service: hello-python", "service: lb") \
        .replace("    hello-python:\n      loadBalancer:", "    lb:\n      loadBalancer:")
    names = []
    for service in ("alpha", "beta"):
        text = same.replace("/hello-python", "/" + service)
        template = traefik_files.load_template(write(tmp_path, text, service + ".yml"), service)
        http = yamlish.parse(traefik.render_dynamic(service, template, []), service).data["http"]
        names.append({kind: set(http[kind]) for kind in ("routers", "middlewares", "services")})
    for kind in ("routers", "middlewares", "services"):
        assert not names[0][kind] & names[1][kind], kind


def test_a_name_in_a_longer_neighbours_namespace_is_refused(tmp_path):
    # A folder copied from hello-python to 'hello' without renaming its objects.
    text = ORIGINAL.replace("/hello-python", "/hello")
    template = traefik_files.load_template(write(tmp_path, text), "hello")
    traefik.render_dynamic("hello", template, [])      # alone it is fine
    with pytest.raises(ConfigError) as caught:
        traefik.render_dynamic("hello", template, [], neighbours=["hello", "hello-python"])
    assert "hello-python" in caught.value.message


# -- the passive health check follows the Traefik in use -------------------------------------------

@pytest.mark.parametrize("version, expected", [(None, False), ((3, 5, 9), False), ((3, 6, 0), True),
                                               ((3, 7, 15), True), ((4, 0, 0), True)])
def test_passive_health_check_only_where_traefik_has_it(version, expected):
    text = traefik.render_dynamic("hello", traefik.default_template("hello"), SERVER_SETS["2-servers"], version)
    lb = lb_of(text)
    assert ("passiveHealthCheck" in lb) is expected
    if expected:
        assert lb["passiveHealthCheck"] == traefik.PASSIVE_HEALTH_CHECK


def test_passive_health_check_golden_for_the_original_template(tmp_path):
    template = traefik_files.load_template(write(tmp_path, ORIGINAL), "hello-python")
    text = traefik.render_dynamic("hello-python", template, SERVER_SETS["2-servers"], (3, 7, 15))
    check_golden("original-hello-python-2-servers-traefik-3.7.yml", text)


@pytest.mark.parametrize("interval, rendered", [
    ('"900s"', "10s"), ('"15m"', "10s"), ("900", "10s"), ('"1m30s"', "10s"),
    ('"10s"', "10s"), ('"5s"', "5s"), ('"500ms"', "500ms"),
])
def test_where_we_add_the_passive_check_the_active_one_runs_at_least_every_10s(tmp_path, interval, rendered):
    """A server the passive check took out returns only at the next active check: with the original
    tool's 900 s, a Traefik continued after a pause (its login node stopped, bench/ha H2) answered 503
    from healthy backends for the rest of the run."""
    text = ORIGINAL.replace('interval: "900s"', "interval: %s" % interval)
    template = traefik_files.load_template(write(tmp_path, text), "hello-python")
    lb = lb_of(traefik.render_dynamic("hello-python", template, [], (3, 7, 15)))
    assert lb["healthCheck"]["interval"] == rendered
    # Where Traefik has no passive check, or the template sets its own, the interval is the template's.
    as_written = interval.strip('"')
    assert str(lb_of(traefik.render_dynamic("hello-python", template, [], (3, 5, 0)))["healthCheck"]["interval"]) \
        == as_written
    own = text.replace("        healthCheck:", "        passiveHealthCheck: {failureWindow: 3s}\n        healthCheck:")
    template = traefik_files.load_template(write(tmp_path, own), "hello-python")
    assert str(lb_of(traefik.render_dynamic("hello-python", template, [], (3, 7, 15)))["healthCheck"]["interval"]) \
        == as_written


def test_a_template_setting_its_own_passive_check_keeps_it_and_old_traefik_refuses_it(tmp_path):
    text = ORIGINAL.replace("        healthCheck:", "        passiveHealthCheck: {failureWindow: 3s}\n        healthCheck:")
    template = traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert lb_of(traefik.render_dynamic("hello-python", template, [], (3, 7, 0)))["passiveHealthCheck"] == {
        "failureWindow": "3s"}
    with pytest.raises(ConfigError) as caught:
        traefik.render_dynamic("hello-python", template, [], (3, 5, 0))
    assert "needs Traefik 3.6" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python", (3, 5, 0))
    assert caught.value.line == line_of(text, "passiveHealthCheck")


def test_a_route_to_the_wake_proxy_has_no_passive_check_even_one_the_template_sets(tmp_path):
    text = ORIGINAL.replace("        healthCheck:", "        passiveHealthCheck: {failureWindow: 3s}\n        healthCheck:")
    for template in (traefik_files.load_template(write(tmp_path, text), "hello-python"),
                     traefik.default_template("hello-python")):
        lb = lb_of(traefik.render_dynamic("hello-python", template, [Server("http://127.0.0.1:4000")], (3, 7, 15),
                                          passive=False))
        assert "passiveHealthCheck" not in lb and lb["servers"] == [{"url": "http://127.0.0.1:4000"}]


@pytest.mark.parametrize("change, ok", [
    (("        healthCheck:", "        passiveHealthCheck: {}\n        healthCheck:"), False),
    (("        healthCheck:", "        passiveHealthCheck: {failureWindow: null}\n        healthCheck:"), False),
    (("        healthCheck:", "        responseForwarding: {}\n        healthCheck:"), False),
    (("        healthCheck:", "        sticky: {}\n        healthCheck:"), True),
    (("        healthCheck:", "        sticky: {cookie: {}}\n        healthCheck:"), True),
    (("\n  middlewares:\n", "\n  middlewares:\n    types:\n      contentType: {}\n"), True),
    (("\n  middlewares:\n", "\n  middlewares:\n    zip:\n      compress: {}\n"), True),
    (("\n  middlewares:\n", "\n  middlewares:\n    add:\n      addPrefix: {}\n"), False),
    (("\n  middlewares:\n", "\n  middlewares:\n    h:\n      headers: {customRequestHeaders: {}}\n"), False),
])
def test_empty_mappings_only_where_traefik_allows_them(tmp_path, change, ok):
    """Traefik (paerser) refuses an empty struct or map unless its Go field is tagged allowEmpty, and the
    refusal takes every service's file with it: found by test_schema_values_load_in_real_traefik."""
    old, new = change
    text = ORIGINAL.replace(old, new, 1)
    if ok:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
        return
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert "empty" in caught.value.message
    needle = [line for line in new.strip().splitlines() if "{" in line][0].strip()
    assert caught.value.line == line_of(text, needle)


def test_a_name_clash_after_namespacing_is_found_at_load(tmp_path):
    text = ORIGINAL.replace("  middlewares:\n    retry:", "  middlewares:\n    hello-python-retry:\n"
                            "      retry: {attempts: 1}\n    retry:")
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert "would all be called 'hello-python-retry'" in caught.value.message


def test_check_reports_a_wrong_type_with_file_and_line(tmp_path, capsys):
    from forever_slurm import cli
    from original_tool import ORIGINAL_SUB
    folder = tmp_path / "services" / "hello-python"
    folder.mkdir(parents=True)
    (folder / "hello-python.sub").write_text(ORIGINAL_SUB)
    text = ORIGINAL.replace('interval: "900s"', 'interval: "banana"')
    (folder / "hello-python.yml").write_text(text)
    (tmp_path / ".env").write_text('SERVICE_LIST="hello-python/1"\n')
    assert cli.main(["--root", str(tmp_path), "check"]) == 1
    out = capsys.readouterr().out
    assert "%s:%d: " % (folder / "hello-python.yml", line_of(text, "banana")) in out
    assert "duration" in out


@pytest.mark.parametrize("path, value", [
    (("http", "middlewares", "h", "headers", "customRequestHeaders"), {"X-A": "{{ .Env }}"}),
    (("http", "middlewares", "h", "headers", "customRequestHeaders"), {"X-\x01": "b"}),
    (("http", "middlewares", "s", "stripPrefix", "prefixes"), ["/svc", "/a\nb"]),
    (("http", "services", "svc", "loadBalancer", "healthCheck", "headers"), {"X-A": "a\u2028b\x00"}),
])
def test_text_inside_lists_and_maps_is_checked_too(path, value):
    text = yamlish.dump(schema_values.with_value(path, value))
    with pytest.raises(ConfigError) as caught:
        traefik.parse_template(text, "t.yml", schema_values.SERVICE)
    assert caught.value.line == yamlish.parse(text, "t.yml").lines[path]


def test_two_spellings_of_one_key_are_refused(tmp_path):
    text = ORIGINAL.replace('          timeout: "1s"', '          timeout: "1s"\n          Timeout: "2s"')
    with pytest.raises(ConfigError) as caught:
        traefik_files.load_template(write(tmp_path, text), "hello-python")
    assert "same key to Traefik" in caught.value.message
    assert caught.value.line == line_of(text, 'Timeout: "2s"')


SECTIONS = schema_values.sections()


def test_sections_cover_the_nested_mappings():
    assert ("http", "services", "svc", "loadBalancer", "healthCheck") in SECTIONS
    assert ("http", "services", "svc", "loadBalancer", "servers") in SECTIONS
    assert ("http", "middlewares", "m-retry", "retry") in SECTIONS
    assert ("http", "routers", "svc-router") in SECTIONS


@pytest.mark.parametrize("path", SECTIONS, ids=[".".join(map(str, p)) for p in SECTIONS])
def test_a_scalar_or_list_where_a_mapping_belongs_is_refused_with_the_line(path):
    rng = random.Random("section:" + ".".join(map(str, path)))
    for value in ["banana", rng.randint(-10 ** 6, 10 ** 6), True, ["a"], [rng.random()]]:
        text = yamlish.dump(schema_values.with_value(path, value))
        with pytest.raises(ConfigError) as caught:
            traefik.parse_template(text, "t.yml", schema_values.SERVICE)
        line = yamlish.parse(text, "t.yml").lines[path]
        width = len(value) if isinstance(value, list) else 0
        assert caught.value.line is not None and line <= caught.value.line <= line + width, (path, value,
                                                                                          str(caught.value))
