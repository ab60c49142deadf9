"""Traefik configuration: service templates in, validated dynamic and static YAML out, written atomically.

Traefik's file provider rejects the WHOLE update when one file in the watched directory is
invalid (YAML error, unknown key, wrong type), which freezes routing for every service until
the file is fixed.  So every template is checked against traefik_schema (keys, value types, the
Traefik version that added a key) and errors name their file and line.  Each service's names
are namespaced and its references and rules confined to itself, so one service's file can
neither break nor shadow another's.  Keys are matched case-insensitively, as Traefik does.
"""

import copy
import os
import re
from typing import Dict, NamedTuple, Tuple

from ..common import fsutil, urls
from . import yamlish
from . import traefik_schema as schema
from ..common.errors import ConfigError
from ..common.settings import SERVICE_NAME_RE

MARKER = "# written by forever-slurm"
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC")
ENTRY_POINTS = ("web",)
ACCESS_LOG_FIELDS = ("DownstreamStatus", "Duration", "RequestPath", "RouterName", "ServiceName", "ServiceURL",
                     "StartUTC")
TEMPLATE_LIMIT = 1 << 20

# Rendered into every balancer that sets none, when the Traefik in use has it (3.6+): a server that
# refuses connections (a job killed without a drain) is out after two failed attempts, before the loop
# has even seen the job end; the active health check, or the window, brings it back.  Two, not one,
# so a single 5xx from a live server does not take it out.
PASSIVE_HEALTH_CHECK = {"failureWindow": "10s", "maxFailedAttempts": 2}
PASSIVE_SINCE = schema.LOAD_BALANCER["passiveHealthCheck"].since
MAX_PRIORITY = 1000000   # far below the priorities Traefik keeps for its own routers


class Server(NamedTuple):
    """One backend; weight 0 drains it: no new requests, in-flight ones finish."""
    url: str
    weight: int = 1


class Template(NamedTuple):
    """A parsed, validated service template; `balancer` is the loadBalancer service that gets the servers."""
    service: str
    data: dict
    path: str
    lines: Dict[Tuple, int]
    balancer: str


def dynamic_name(service):
    """File name of a service's dynamic config inside the watched directory."""
    return service + ".yml"


def valid_server_url(url):
    """True for http(s)://host:port with a port in 1..65535 (no path, no user info)."""
    return urls.valid_backend_url(url)


def has_feature(version, since):
    """True when Traefik `version` (a tuple, or None when unknown) has a feature added in `since`."""
    return not since or (version is not None and tuple(version) >= tuple(since))


def load_template(path, service, traefik_version=None):
    """Template from a service's .yml; ConfigError naming path:line for anything Traefik would reject."""
    _check_service_name(service)
    try:
        text = fsutil.read_text_file(path, "Traefik template", TEMPLATE_LIMIT)
    except FileNotFoundError:
        raise ConfigError("cannot read the Traefik template: it does not exist", path)
    if "\ufffd" in text:
        line = text[:text.index("\ufffd")].count("\n") + 1
        raise ConfigError("not UTF-8 text: save the template as UTF-8", path, line)
    return parse_template(text, path, service, traefik_version)


def parse_template(text, path, service, traefik_version=None):
    """Like load_template, from text already read (bundled templates come from pkgutil)."""
    doc = yamlish.parse(text, path)
    balancer = _validate(doc.data, service, _Where(path, doc.lines), traefik_version)
    try:
        _namespaced(copy.deepcopy(doc.data), service, balancer)     # so `check` reports a clash too
    except ConfigError as exc:
        raise ConfigError(exc.message, path)
    return Template(service, doc.data, path, doc.lines, balancer)


def default_template(service, health_path="/"):
    """The template used when a service has no .yml: PathPrefix + stripPrefix, retry, an active health check
    (and the passive one, which render_dynamic adds where the Traefik in use has it)."""
    _check_service_name(service)
    if not isinstance(health_path, str) or not health_path.startswith("/") or "{{" in health_path:
        raise ConfigError("the health check path must start with '/' (got %r)" % (health_path,))
    data = {"http": {
        "routers": {service + "-router": {
            "entryPoints": ["web"],
            "rule": "PathPrefix(`/%s`)" % service,
            "service": service,
            "middlewares": [service + "-strip", service + "-retry"],
        }},
        "middlewares": {
            service + "-strip": {"stripPrefix": {"prefixes": ["/" + service]}},
            # No initialInterval: a delay only makes each retry more likely to meet the dead server again.
            service + "-retry": {"retry": {"attempts": 3}},
        },
        "services": {service: {"loadBalancer": {
            "healthCheck": {"path": health_path, "interval": "10s", "timeout": "2s"},
            "servers": [],
        }}},
    }}
    path = "<default template for %s>" % service
    balancer = _validate(data, service, _Where(path, {}), None)
    return Template(service, data, path, {}, balancer)


def health_path(template):
    """The loadBalancer's healthCheck path, or '/' when the template sets none."""
    check = _health_check(template)
    path = _get(check, "path")[1] if check else None
    return path if isinstance(path, str) and path else "/"


def health_status(template):
    """The status the healthCheck expects (e.g. 401), or None when any 2xx/3xx counts as healthy."""
    check = _health_check(template)
    status = schema.go_text(_get(check, "status")[1]) if check else None
    return int(status) if status is not None and status.strip().lstrip("+").isdigit() else None


def render_dynamic(service, template, servers, traefik_version=None, neighbours=(), passive=True):
    """The service's dynamic config: the template with its names namespaced, exactly these servers, and
    the passive health check where `traefik_version` (None: unknown) has it; passive=False removes any
    (a route to the wake proxy, whose 503 after a long wait must not take it out).

    `neighbours` are the other services sharing the watched directory: a name that falls in the
    namespace of a longer-named one (service 'a' naming a router 'a-b-router' beside service 'a-b')
    is refused, so two files can never define the same name (Traefik would keep only the first).
    """
    _check_service_name(service)
    entries = [_server_entry(server) for server in servers]
    data = copy.deepcopy(template.data)
    lb = _balancer_of(data, template.balancer)
    for key in [k for k in lb if k.lower() == "servers"]:
        del lb[key]
    lb["servers"] = []
    if not passive:
        for key in [k for k in lb if k.lower() == "passivehealthcheck"]:
            del lb[key]
    elif has_feature(traefik_version, PASSIVE_SINCE) and _get(lb, "passiveHealthCheck")[0] is None:
        lb["passiveHealthCheck"] = dict(PASSIVE_HEALTH_CHECK)
    data = _namespaced(data, service, template.balancer)
    # Checked before the servers go in: _server_entry has checked those, and walking thousands of them
    # again each cycle would cost more than everything else in the render.
    _validate(data, service, _Where("<rendered config for %s>" % service, {}), traefik_version)
    _check_neighbours(data, service, neighbours)
    lb["servers"] = entries
    return "%s; edit services/%s/ instead\n%s" % (MARKER, service, yamlish.dump(data))


def render_static(settings, layout, log_level="INFO"):
    """Traefik's static config: web entryPoint, a loopback-only entryPoint for ping and metrics, the file provider."""
    if log_level not in _LOG_LEVELS:
        raise ConfigError("Traefik log level must be one of %s, got %r" % (", ".join(_LOG_LEVELS), log_level))
    bind = settings.traefik_bind
    host = "[%s]" % bind if ":" in bind and not bind.startswith("[") else bind
    data = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "web": {"address": "%s:%d" % (host, settings.traefik_port)},
            # Defining it keeps ping and metrics off the default ":8080" on every interface.
            "traefik": {"address": "127.0.0.1:%d" % settings.traefik_ping_port},
        },
        "ping": {"entryPoint": "traefik"},
        "metrics": {"prometheus": {"entryPoint": "traefik"}},
        "providers": {
            # The default 2s throttle delays every change after the first; 200ms applies backend changes faster
            # while still collapsing bursts of writes into one rebuild.
            "providersThrottleDuration": "200ms",
            "file": {"directory": layout.watch, "watch": True},
        },
        # A dead node sends no RST; without dialTimeout each request hangs 30s before Traefik gives up on it.
        # No idle keep-alive connections to backends (-1): every open connection is then a request in
        # flight, the load signal of min-max services and of drains (inflight.py); docs/results.md L3
        # has what a fresh connection per request costs.
        "serversTransport": {"forwardingTimeouts": {"dialTimeout": "2s"}, "maxIdleConnsPerHost": -1},
        # Traefik rotates its own log (it does not reopen it on USR1); the access log is rotated by
        # the loop (accesslog.rotate_if_large), which then sends USR1.
        "log": {"level": log_level, "filePath": os.path.join(layout.log, "traefik.log"),
                "maxSize": 20, "maxBackups": 3},
        "accessLog": {
            "filePath": os.path.join(layout.log, "traefik-access.log"),
            "format": "json",
            "fields": {"defaultMode": "drop", "names": {name: "keep" for name in ACCESS_LOG_FIELDS},
                       "headers": {"defaultMode": "drop"}},
        },
    }
    return "%s from .env; changes here are overwritten\n%s" % (MARKER, yamlish.dump(data))


def write_if_changed(path, text, tmp_dir):
    """Atomically replace `path` with `text` unless it already holds it; True when written.

    The temp file lives in tmp_dir (same filesystem, outside the watched directory): a temp
    file inside it would wake Traefik's watcher first and delay the real change by ~2 s.
    """
    return fsutil.atomic_write(path, text, mode=0o644, tmp_dir=tmp_dir, only_if_changed=True)


def remove_stale(watch_dir, keep_names):
    """Delete files in watch_dir that this tool wrote and that are not in keep_names; the removed names, sorted."""
    keep = set(keep_names)
    removed = []
    try:
        names = sorted(os.listdir(watch_dir))
    except FileNotFoundError:
        return removed
    for name in names:
        full = os.path.join(watch_dir, name)
        if name in keep or not os.path.isfile(full) or not _written_by_us(full):
            continue
        try:
            os.unlink(full)
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def _written_by_us(path):
    try:
        with open(path, "rb") as handle:
            return handle.readline().startswith(MARKER.encode("ascii"))
    except (OSError, IOError):
        return False


def _check_service_name(service):
    if not isinstance(service, str) or not SERVICE_NAME_RE.match(service):
        raise ConfigError("%r is not a service name (letters, digits, . _ -, no spaces)" % (service,))


def _server_entry(server):
    url, weight = server.url, server.weight
    if not valid_server_url(url):
        raise ConfigError("server URL %r is not http(s)://host:port" % (url,))
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise ConfigError("server %s: weight must be a whole number >= 0, got %r" % (url, weight))
    entry = {"url": url}
    if weight != 1:
        entry["weight"] = weight
    return entry


def _balancer_of(data, name):
    services = _get(_get(data, "http")[1], "services")[1]
    return _get(_get(services, name)[1], "loadBalancer")[1]


def _health_check(template):
    lb = _balancer_of(template.data, template.balancer)
    return _get(lb, "healthCheck")[1] if isinstance(lb, dict) else None


def _get(mapping, name):
    """(actual key, value) for `name` matched case-insensitively, as Traefik does; (None, None) if absent."""
    if isinstance(mapping, dict):
        if name in mapping:
            return name, mapping[name]
        lowered = name.lower()
        for key, value in mapping.items():
            if key.lower() == lowered:
                return key, value
    return None, None


class _Where:
    """Turns a key path into path:line for messages."""

    def __init__(self, path, lines):
        self.path = path
        self.lines = lines

    def error(self, keys, message):
        return ConfigError(message, self.path, yamlish.line_of(self.lines, keys))


def _dotted(keys):
    return ".".join(str(k) for k in keys)


def _kind(value):
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", bool: "true/false", int: "a number",
            float: "a number", str: "text"}.get(type(value), type(value).__name__)


def _shown(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the walk over the schema: keys, value types, versions, characters ------------------------------

_BAD_CHAR_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")


def _check_text(text, where, keys, what):
    """Characters YAML cannot carry in a plain file and '{{', which Traefik's Go templating would run."""
    if "{{" in text:
        raise where.error(keys, "'{{' is not allowed in %s: Traefik treats its files as Go templates" % what)
    bad = _BAD_CHAR_RE.search(text)
    if bad:
        raise where.error(keys, "%s holds the control character U+%04X; remove it" % (what, ord(bad.group())))


def _check_all_text(value, where, keys):
    """_check_text on a value and, for lists and mappings (headers, prefixes), on every key and item in it."""
    if isinstance(value, str):
        _check_text(value, where, keys, _dotted(keys) or "a value")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(str(key), where, keys, "a key in %s" % _dotted(keys))
            _check_all_text(item, where, keys)
    elif isinstance(value, list):
        for item in value:
            _check_all_text(item, where, keys)


class _Walker:
    """Checks data against traefik_schema, naming the file and line of the first problem."""

    def __init__(self, where, version):
        self.where = where
        self.version = version

    def fail(self, keys, message):
        raise self.where.error(keys, message)

    def value(self, value, kind, keys, allow_empty=False):
        if isinstance(kind, str):
            _check_all_text(value, self.where, keys)
        if value is None:
            return      # Traefik skips a key with no value (paerser file/raw_node.go)
        if isinstance(kind, str):
            expected = schema.TYPES[kind]
            if not expected.check(value):
                self.fail(keys, "%s must be %s, got %s %s" % (_dotted(keys), expected.expected, _kind(value),
                                                              _shown(value)))
            if isinstance(value, dict):
                self.not_empty(value, keys, False)
        elif isinstance(kind, dict):
            self.mapping(value, kind, keys, allow_empty)
        elif isinstance(kind, schema.ListOf):
            if not isinstance(value, list):
                self.fail(keys, "%s must be a list of '- key: value' items, got %s" % (_dotted(keys), _kind(value)))
            for index, item in enumerate(value):
                self.mapping(item, kind.item, keys + (index,))
        elif isinstance(kind, schema.OneOf):
            self.one_of(value, kind.choices, keys)
        elif isinstance(kind, schema.Named):
            self.named(value, kind.item, keys)

    def mapping(self, value, fields, keys, allow_empty=True):
        if not isinstance(value, dict):
            self.fail(keys, "%s must be a mapping of 'key: value' lines, got %s" % (_dotted(keys) or "the template",
                                                                                  _kind(value)))
        self.not_empty(value, keys, allow_empty)
        for key, item in value.items():
            field = self.field(key, fields, keys)
            self.value(item, field.kind, keys + (key,), field.allow_empty)

    def not_empty(self, value, keys, allow_empty):
        if not allow_empty and all(item is None for item in value.values()):
            self.fail(keys, "%s is empty, and Traefik refuses an empty mapping here (every service's config "
                      "with it); give it a setting or remove it" % _dotted(keys))

    def field(self, key, fields, keys):
        """The schema entry for `key`; unknown, refused, duplicate and too-new keys raise."""
        canonical = {name.lower(): name for name in fields}
        lowered = str(key).lower()
        path = keys + (key,)
        _check_text(str(key), self.where, path, "a key")
        if lowered not in canonical:
            refused = {name.lower(): (name, why) for name, why in schema.REFUSED.items()}.get(lowered)
            if refused:
                self.fail(path, "%r is not allowed in a forever-slurm template: %s; remove it" % (key, refused[1]))
            self.fail(path, "unknown key %r under %s; Traefik would reject every service's config. Allowed "
                            "here: %s" % (key, _dotted(keys) or "the top level", ", ".join(sorted(fields))))
        field = fields[canonical[lowered]]
        if self.version is not None and not has_feature(self.version, field.since):
            self.fail(path, "%s needs Traefik %s or newer; the Traefik in use is %s. Remove it or upgrade Traefik"
                      % (canonical[lowered], schema.version_text(field.since), schema.version_text(self.version)))
        return field

    def one_of(self, value, choices, keys):
        if not isinstance(value, dict) or len(value) != 1:
            self.fail(keys, "%s must have exactly one type (one of %s)" % (_dotted(keys), ", ".join(sorted(choices))))
        (key, body), = value.items()
        field = self.field(key, {name: item if isinstance(item, schema.Key) else schema.Key(item)
                                 for name, item in choices.items()}, keys)
        if not isinstance(body, dict):
            self.fail(keys + (key,), "%s must be a mapping of its options, like %s: {...}" % (key, key))
        self.mapping(body, field.kind, keys + (key,), field.allow_empty)

    def named(self, value, item, keys):
        if not isinstance(value, dict):
            self.fail(keys, "%s must be a mapping of names, got %s" % (_dotted(keys), _kind(value)))
        for name, body in value.items():
            if not isinstance(name, str) or not schema.NAME_RE.match(name):
                self.fail(keys + (name,), "%r is not a usable name: use letters, digits, . _ - (no '@', which "
                          "names another provider's objects)" % (name,))
            self.value(body, item, keys + (name,))
            if body is None:
                self.fail(keys + (name,), "%s is empty; give it its settings or remove it" % _dotted(keys + (name,)))


def _check_duplicates(data, where, keys=()):
    """'loadBalancer' and 'loadbalancer' are the same key to Traefik, so one of them would be lost."""
    if isinstance(data, dict):
        seen = {}
        for key, value in data.items():
            lowered = str(key).lower()
            if lowered in seen:
                raise where.error(keys + (key,), "%r and %r are the same key to Traefik; keep one" % (seen[lowered], key))
            seen[lowered] = key
            _check_duplicates(value, where, keys + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _check_duplicates(value, where, keys + (index,))


# -- what Traefik needs beyond types, and what keeps a service to itself ----------------------------

def _validate(data, service, where, version):
    """Checks the template; returns the name of the loadBalancer service that gets the servers."""
    _check_duplicates(data, where)
    _Walker(where, version).mapping(data, schema.TEMPLATE, ())
    http_key, http = _get(data, "http")
    if http_key is None or http is None:
        raise where.error((), "no 'http:' section; a service template needs http.routers and http.services "
                              "(see services/hello-python/hello-python.yml)")
    top = (http_key,)
    routers_key, routers = _get(http, "routers")
    services_key, services = _get(http, "services")
    middlewares_key, middlewares = _get(http, "middlewares")
    if not routers:
        raise where.error(top + ((routers_key,) if routers_key else ()),
                          "http.routers is missing or empty; add a router with a rule and a service")
    if not services:
        raise where.error(top + ((services_key,) if services_key else ()),
                          "http.services is missing or empty; add a loadBalancer service")
    middlewares = middlewares or {}
    for name, middleware in middlewares.items():
        _check_middleware(middleware, middlewares, services, where, top + (middlewares_key, name))
    for name, service_def in services.items():
        _check_balancer(_get(service_def, "loadBalancer"), where, top + (services_key, name))
    used = []
    for name, router in routers.items():
        target = _check_router(router, service, middlewares, services, where, top + (routers_key, name))
        if target not in used:
            used.append(target)
    if len(used) > 1:
        if service in used:
            return service
        raise where.error(top + (routers_key,), "routers point at several load balancers (%s); forever-slurm "
                          "fills one: name it %s" % (", ".join(used), service))
    return used[0]


def _own(name, names, where, keys, what):
    """A reference must name one of this file's own objects: never another file's or Traefik's (x@internal)."""
    if "@" in name:
        raise where.error(keys, "%s %r belongs to another provider; a service may only use the %ss its own "
                          "file defines" % (what, name, what))
    if name not in names:
        raise where.error(keys, "%s %r is not defined in this file (defined: %s)"
                          % (what, name, ", ".join(sorted(names)) or "none"))


def _check_router(router, service, middlewares, services, where, keys):
    rule_key, rule = _get(router, "rule")
    if rule is None:
        raise where.error(keys, "router %s needs a rule, like rule: \"PathPrefix(`/%s`)\"" % (keys[-1], service))
    target_key, target = _get(router, "service")
    if target is None:
        raise where.error(keys, "router %s needs 'service: <name of an http.services entry>'" % keys[-1])
    _own(schema.go_text(target), services, where, keys + (target_key,), "service")
    entry_key, entry_points = _get(router, "entryPoints")
    for index, name in enumerate(entry_points or []):
        # Traefik skips a router on an undefined entryPoint, so the service would silently vanish.
        if schema.go_text(name) not in ENTRY_POINTS:
            raise where.error(keys + (entry_key, index), "router %s uses entryPoint %r; forever-slurm's "
                              "Traefik serves on %s" % (keys[-1], name, " and ".join(ENTRY_POINTS)))
    used_key, used = _get(router, "middlewares")
    for index, name in enumerate(used or []):
        _own(schema.go_text(name), middlewares, where, keys + (used_key, index), "middleware")
    priority_key, priority = _get(router, "priority")
    _check_confined(schema.go_text(rule), None if priority is None else int(schema.go_text(priority)), service,
                    where, keys, rule_key, priority_key)
    return schema.go_text(target)


def _check_middleware(middleware, middlewares, services, where, keys):
    (type_key, options), = middleware.items()
    kind = type_key.lower()
    keys = keys + (type_key,)
    if kind == "retry":
        attempts_key, attempts = _get(options, "attempts")
        if attempts is None or int(schema.go_text(attempts)) < 1:
            raise where.error(keys + ((attempts_key,) if attempts_key else ()),
                              "retry needs 'attempts:' with a whole number above 0, like 3")
    elif kind == "stripprefix":
        if _get(options, "prefixes")[1] is None:
            raise where.error(keys, "stripPrefix needs 'prefixes:', a list like [\"/name\"]")
    elif kind == "chain":
        names_key, names = _get(options, "middlewares")
        for index, name in enumerate(names or []):
            _own(schema.go_text(name), middlewares, where, keys + (names_key, index), "middleware")
    elif kind == "errors":
        service_key, target = _get(options, "service")
        if target is not None:
            _own(schema.go_text(target), services, where, keys + (service_key,), "service")


def _check_balancer(found, where, keys):
    lb_key, lb = found
    if lb is None:
        return
    health_key, health = _get(lb, "healthCheck")
    if health is not None and _get(health, "path")[1] is None:
        raise where.error(keys + (lb_key, health_key), "healthCheck needs 'path:' starting with '/', like "
                          "path: \"/health\"")


# -- rules: a router stays inside its service's own path --------------------------------------------

_TOKEN_RE = re.compile(r"\s*(?:(&&)|(\|\|)|(!)|(\()|(\))|([A-Za-z][A-Za-z0-9]*)\(((?:\s*(?:`[^`]*`|\"(?:[^\"\\]|\\.)*\")"
                       r"\s*,?)*)\s*\))")
_ARG_RE = re.compile(r"`([^`]*)`|\"((?:[^\"\\]|\\.)*)\"")
_NONE, _LOOSE, _BOUNDED = 0, 1, 2


def _rule_tree(rule):
    """The rule as nested tuples ('and'|'or', a, b), ('not', a), ('m', name, args); None if it does not parse
    (Traefik then refuses the router alone, but we cannot tell what it would match, so it is refused)."""
    tokens, pos = [], 0
    while pos < len(rule):
        if not rule[pos:].strip():
            break
        match = _TOKEN_RE.match(rule, pos)
        if match is None:
            return None
        pos = match.end()
        if match.group(6):
            args = [a if a is not None else b for a, b in _ARG_RE.findall(match.group(7))]
            tokens.append(("m", match.group(6), args))
        else:
            tokens.append(next(t for t in match.groups()[:5] if t))
    tree, rest = _parse_or(tokens)
    return tree if tree is not None and not rest else None


def _parse_or(tokens):
    left, tokens = _parse_and(tokens)
    while left is not None and tokens[:1] == ["||"]:
        right, tokens = _parse_and(tokens[1:])
        left = ("or", left, right) if right is not None else None
    return left, tokens


def _parse_and(tokens):
    left, tokens = _parse_not(tokens)
    while left is not None and tokens[:1] == ["&&"]:
        right, tokens = _parse_not(tokens[1:])
        left = ("and", left, right) if right is not None else None
    return left, tokens


def _parse_not(tokens):
    if not tokens:
        return None, tokens
    head = tokens[0]
    if head == "!":
        inner, rest = _parse_not(tokens[1:])
        return (("not", inner) if inner is not None else None), rest
    if head == "(":
        inner, rest = _parse_or(tokens[1:])
        if inner is None or rest[:1] != [")"]:
            return None, rest
        return inner, rest[1:]
    if isinstance(head, tuple):
        return head, tokens[1:]
    return None, tokens


def _confinement(tree, service):
    """How tightly a rule keeps to /<service>: _BOUNDED (only /<service> and /<service>/...), _LOOSE
    (PathPrefix(`/<service>`), which also matches /<service>-other...) or _NONE."""
    kind = tree[0]
    if kind == "m":
        name, args = tree[1].lower(), tree[2]
        if name not in ("path", "pathprefix") or not args:
            return _NONE
        own = "/" + service
        levels = [_BOUNDED if arg.startswith(own + "/") or (arg == own and name == "path")
                  else _LOOSE if arg == own else _NONE for arg in args]
        return min(levels)
    if kind == "and":
        return max(_confinement(tree[1], service), _confinement(tree[2], service))
    if kind == "or":
        return min(_confinement(tree[1], service), _confinement(tree[2], service))
    return _NONE


def _check_confined(rule, priority, service, where, keys, rule_key, priority_key):
    """Refuse a rule or priority that could take requests meant for another service.

    The rule: every router must be confined to its service's path, /<service> or /<service>/...:
    the rule needs Path or PathPrefix on it joined with && (|| only between confined parts; ! never
    confines).  PathPrefix(`/<service>`) on its own also matches /<service>-other..., so it must be the
    whole rule and carry no priority: Traefik then ranks it by its length, 15 + len(service), and
    between /hello and /hello-python the longer name always wins.  Any other router must stay
    on the segment boundary and rank at least 15 + len(service) (explicit, or by the rule's length),
    so no shorter-named service's plain PathPrefix can outrank it on its own paths; it cannot
    reach another service's paths at all, so there is no upper bound beyond MAX_PRIORITY.
    The original tool's rules (plain PathPrefix, no priority) pass unchanged.
    """
    plain = "PathPrefix(`/%s`)" % service
    tree = _rule_tree(rule)
    level = _confinement(tree, service) if tree is not None else _NONE
    if level == _NONE:
        raise where.error(keys + (rule_key,), "router %s: the rule %r must keep to this service's own path: "
                          "use %s, or add '&& PathPrefix(`/%s/`)' to it" % (keys[-1], rule, plain, service))
    floor = len(plain)
    if level == _LOOSE:
        if tree != ("m", tree[1], ["/" + service]) or tree[1].lower() != "pathprefix":
            raise where.error(keys + (rule_key,), "router %s: %s also matches other services' paths "
                              "(/%s-other...); with more conditions, use (Path(`/%s`) || PathPrefix(`/%s/`)) "
                              "instead" % (keys[-1], plain, service, service, service))
        if priority is not None:
            raise where.error(keys + (priority_key,), "router %s: a priority on %s would let it take "
                              "longer-named services' paths; remove it" % (keys[-1], plain))
        return
    effective = len(rule) if priority is None or priority == 0 else priority
    if not floor <= effective <= MAX_PRIORITY:
        raise where.error(keys + ((priority_key,) if priority_key else (rule_key,)),
                          "router %s: priority %d is outside %d..%d; below that a shorter-named service's "
                          "route could take these requests. Set priority: %d (or more)"
                          % (keys[-1], effective, floor, MAX_PRIORITY, floor))


# -- names: one namespace per service -----------------------------------------------------------------

def _namespaced_name(name, service):
    return name if name == service or name.startswith(service + "-") else "%s-%s" % (service, name)


def _namespaced(data, service, balancer):
    """Prefix every router, middleware and service name with the service (the original's templates all
    call their middleware 'retry', and in Traefik the first file to define a name wins) and rename the
    balancer to the service itself (the access log's ServiceName then names it); references follow."""
    http = _get(data, "http")[1]
    renames = {}
    for kind in ("routers", "middlewares", "services"):
        key, named = _get(http, kind)
        if not named:
            continue
        table = {name: (service if kind == "services" and name == balancer else _namespaced_name(name, service))
                 for name in named}
        clash = [name for name in named if list(table.values()).count(table[name]) > 1]
        if clash:
            raise ConfigError("%s %s would all be called %r once namespaced; rename one"
                              % (kind, " and ".join(sorted(clash)), table[clash[0]]))
        http[key] = {table[name]: body for name, body in named.items()}
        renames[kind] = table
    middleware_names, service_names = renames.get("middlewares", {}), renames.get("services", {})

    def renamed(names, table):
        return [table.get(schema.go_text(n), n) for n in names] if isinstance(names, list) else names

    for router in (_get(http, "routers")[1] or {}).values():
        key, names = _get(router, "middlewares")
        if key is not None:
            router[key] = renamed(names, middleware_names)
        key, target = _get(router, "service")
        router[key] = service_names.get(schema.go_text(target), target)
    for body in (_get(http, "middlewares")[1] or {}).values():
        chain_key, chain = _get(body, "chain")
        key, names = _get(chain, "middlewares")
        if key is not None:
            chain[key] = renamed(names, middleware_names)
        errors = _get(body, "errors")[1]
        key, target = _get(errors, "service")
        if key is not None and target is not None:
            errors[key] = service_names.get(schema.go_text(target), target)
    return data


def _check_neighbours(data, service, neighbours):
    http = _get(data, "http")[1]
    longer = [other for other in neighbours if len(other) > len(service) and other.startswith(service + "-")]
    for kind in ("routers", "middlewares", "services"):
        for name in _get(http, kind)[1] or {}:
            for other in longer:
                if name == other or name.startswith(other + "-"):
                    raise ConfigError("%s %r of %s would be taken for one of service %s's; rename it so it "
                                      "does not start with %s-" % (kind[:-1], name, service, other, other))
