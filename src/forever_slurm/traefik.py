"""Traefik configuration: service templates in, validated dynamic and static YAML out, written atomically.

Traefik's file provider rejects the WHOLE update when one file in the watched directory is
invalid (YAML error, unknown key, wrong type), which freezes routing for every service until
the file is fixed.  So every file we write is checked here first, and template errors name
their file and line.  Keys are matched case-insensitively, as Traefik does.
"""

import copy
import os
import re
import tempfile
from typing import Dict, NamedTuple, Tuple

from . import fsutil, urls, yamlish
from .errors import ConfigError
from .settings import SERVICE_NAME_RE

MARKER = "# written by forever-slurm"
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC")
ENTRY_POINTS = ("web",)
ACCESS_LOG_FIELDS = ("DownstreamStatus", "Duration", "RequestPath", "RouterName", "ServiceName", "ServiceURL",
                     "StartUTC")

# Keys Traefik v3 accepts at the levels we check (from pkg/config/dynamic, tried on Traefik 3.7).
_HTTP_KEYS = ("routers", "middlewares", "services")
_ROUTER_KEYS = ("entryPoints", "middlewares", "service", "rule", "ruleSyntax", "priority", "tls",
                "observability")
_SERVICE_TYPES = ("loadBalancer", "weighted", "mirroring", "failover")
_LB_KEYS = ("servers", "strategy", "sticky", "healthCheck", "passiveHealthCheck", "passHostHeader",
            "responseForwarding", "serversTransport")
_HEALTH_KEYS = ("scheme", "mode", "path", "method", "status", "port", "interval", "unhealthyInterval", "timeout",
                "hostname", "followRedirects", "headers")
_PASSIVE_KEYS = ("failureWindow", "maxFailedAttempts")
_STICKY_KEYS = ("cookie",)
_COOKIE_KEYS = ("name", "secure", "httpOnly", "sameSite", "maxAge", "path", "domain")
_FORWARDING_KEYS = ("flushInterval",)
_SERVER_KEYS = ("url", "weight", "preservePath")
_MIDDLEWARE_TYPES = ("addPrefix", "basicAuth", "buffering", "chain", "circuitBreaker", "compress", "contentType",
                     "digestAuth", "encodedCharacters", "errors", "forwardAuth", "grpcWeb", "headers",
                     "inFlightReq", "ipAllowList", "ipWhiteList", "passTLSClientCert", "plugin", "rateLimit",
                     "redirectRegex", "redirectScheme", "replacePath", "replacePathRegex", "retry", "stripPrefix",
                     "stripPrefixRegex")
# Options checked for the middlewares templates actually use; other types are checked by name only.
_MIDDLEWARE_OPTIONS = {
    "retry": ("attempts", "initialInterval", "timeout", "maxRequestBodyBytes", "status",
              "disableRetryOnNetworkError", "retryNonIdempotentMethod"),
    "stripPrefix": ("prefixes", "forceSlash"),
    "chain": ("middlewares",),
}


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

    def line_of(self, keys):
        """Line of the deepest known prefix of a key path, for messages about this template (or None)."""
        return yamlish.Document(self.data, self.lines, self.path).line_of(keys)


def dynamic_name(service):
    """File name of a service's dynamic config inside the watched directory."""
    return service + ".yml"


def valid_server_url(url):
    """True for http(s)://host:port with a port in 1..65535 (no path, no user info)."""
    return urls.valid_backend_url(url)


def load_template(path, service):
    """Template from a service's .yml; ConfigError naming path:line for anything Traefik would reject."""
    _check_service_name(service)
    try:
        text = fsutil.read_text_file(path, "Traefik template")
    except FileNotFoundError:
        raise ConfigError("cannot read the Traefik template: it does not exist", path)
    if "\ufffd" in text:
        line = text[:text.index("\ufffd")].count("\n") + 1
        raise ConfigError("not UTF-8 text: save the template as UTF-8", path, line)
    return parse_template(text, path, service)


def parse_template(text, path, service):
    """Like load_template, from text already read (bundled templates come from pkgutil)."""
    for number, line in enumerate(text.split("\n"), 1):
        if "{{" in line:
            raise ConfigError("'{{' is not allowed: Traefik treats its files as Go templates; remove it",
                              path, number)
    doc = yamlish.parse(text, path)
    balancer = _validate(doc.data, service, _Where(path, doc.lines))
    return Template(service, doc.data, path, doc.lines, balancer)


def default_template(service, health_path="/"):
    """The template used when a service has no .yml: PathPrefix + stripPrefix, retry, an active health check."""
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
    balancer = _validate(data, service, _Where(path, {}))
    return Template(service, data, path, {}, balancer)


def health_path(template):
    """The loadBalancer's healthCheck path, or '/' when the template sets none."""
    check = _health_check(template)
    path = _get(check, "path")[1] if check else None
    return path if isinstance(path, str) and path else "/"


def health_status(template):
    """The status the healthCheck expects (e.g. 401), or None when any 2xx/3xx counts as healthy."""
    check = _health_check(template)
    status = _get(check, "status")[1] if check else None
    if isinstance(status, str) and status.strip().isdigit():
        return int(status)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def render_dynamic(service, template, servers):
    """The service's dynamic config: template with namespaced middlewares and exactly these servers."""
    _check_service_name(service)
    data = _namespaced(copy.deepcopy(template.data), service)
    balancer = _get(_get(_get(data, "http")[1], "services")[1], template.balancer)[1]
    lb_key, lb = _get(balancer, "loadBalancer")
    for key in [k for k in lb if k.lower() == "servers"]:
        del lb[key]
    lb["servers"] = [_server_entry(server) for server in servers]
    where = _Where("<rendered config for %s>" % service, {})
    _validate(data, service, where)
    _check_no_braces(data, where, ())
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
        # A dead node sends no RST; without this each request hangs 30s before Traefik gives up on it.
        "serversTransport": {"forwardingTimeouts": {"dialTimeout": "2s"}},
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
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                return False
    except (OSError, IOError):
        pass
    os.makedirs(tmp_dir, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    return True


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


def _health_check(template):
    services = _get(_get(template.data, "http")[1], "services")[1]
    lb = _get(_get(services, template.balancer)[1], "loadBalancer")[1]
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
        keys = tuple(keys)
        line = None
        while keys and line is None:
            line = self.lines.get(keys)
            keys = keys[:-1]
        return ConfigError(message, self.path, line)


def _dotted(keys):
    return ".".join(str(k) for k in keys)


def _mapping(value, where, keys, what):
    if not isinstance(value, dict):
        raise where.error(keys, "%s must be a mapping of 'key: value' lines, got %s"
                          % (_dotted(keys) or what, _kind(value)))
    return value


def _kind(value):
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", bool: "true/false", int: "a number",
            float: "a number", str: "text"}.get(type(value), type(value).__name__)


def _check_keys(mapping, allowed, where, keys):
    """Unknown keys make Traefik drop the whole provider update; name the key and what is allowed."""
    canonical = {name.lower(): name for name in allowed}
    seen = {}
    for key in mapping:
        lowered = str(key).lower()
        if lowered not in canonical:
            raise where.error(keys + (key,), "unknown key %r under %s; Traefik would reject every service's "
                              "config. Allowed here: %s" % (key, _dotted(keys), ", ".join(allowed)))
        if lowered in seen:
            raise where.error(keys + (key,), "%r and %r are the same key to Traefik; keep one" % (seen[lowered], key))
        seen[lowered] = key


def _string_list(value, where, keys):
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise where.error(keys, "%s must be a list of names, like [web]" % _dotted(keys))
    return value


def _validate(data, service, where):
    """Checks the shape Traefik needs; returns the name of the loadBalancer service that gets the servers."""
    _mapping(data, where, (), "the template")
    _check_keys(data, ("http",), where, ())
    http_key, http = _get(data, "http")
    if http_key is None:
        raise where.error((), "no 'http:' section; a service template needs http.routers and http.services "
                              "(see services/hello-python/hello-python.yml)")
    top = (http_key,)
    _mapping(http, where, top, "http")
    _check_keys(http, _HTTP_KEYS, where, top)
    routers_key, routers = _get(http, "routers")
    services_key, services = _get(http, "services")
    middlewares_key, middlewares = _get(http, "middlewares")
    if not routers:
        raise where.error(top, "http.routers is missing or empty; add a router with a rule and a service")
    if not services:
        raise where.error(top, "http.services is missing or empty; add a loadBalancer service")
    _mapping(routers, where, top + (routers_key,), "http.routers")
    _mapping(services, where, top + (services_key,), "http.services")
    if middlewares is None:
        middlewares = {}
    _mapping(middlewares, where, top + (middlewares_key or "middlewares",), "http.middlewares")
    for name, middleware in middlewares.items():
        _check_middleware(middleware, middlewares, where, top + (middlewares_key, name))
    balancers = set()
    for name, service_def in services.items():
        if _check_service(service_def, where, top + (services_key, name)) == "loadBalancer":
            balancers.add(name)
    used = []
    for name, router in routers.items():
        keys = top + (routers_key, name)
        target = _check_router(router, middlewares, services, where, keys)
        if "@" not in target:
            if target not in balancers:
                raise where.error(keys + (_get(router, "service")[0],), "router %s points at service %r, which "
                                  "is not a loadBalancer; forever-slurm fills a loadBalancer's servers" % (name, target))
            if target not in used:
                used.append(target)
    if not used:
        raise where.error(top + (routers_key,), "no router points at a loadBalancer service in this file")
    if len(used) > 1:
        if service in used:
            return service
        raise where.error(top + (routers_key,), "routers point at several load balancers (%s); forever-slurm "
                          "fills one: name it %s" % (", ".join(used), service))
    return used[0]


def _check_router(router, middlewares, services, where, keys):
    _mapping(router, where, keys, "a router")
    _check_keys(router, _ROUTER_KEYS, where, keys)
    rule_key, rule = _get(router, "rule")
    if not isinstance(rule, str) or not rule.strip():
        raise where.error(keys + (rule_key,), "router %s needs a rule, like rule: \"PathPrefix(`/name`)\"" % keys[-1])
    service_key, target = _get(router, "service")
    if not isinstance(target, str) or not target:
        raise where.error(keys + (service_key,), "router %s needs 'service: <name of an http.services entry>'"
                          % keys[-1])
    if "@" not in target and target not in services:
        raise where.error(keys + (service_key,), "router %s uses service %r, which http.services does not define"
                          % (keys[-1], target))
    entry_key, entry_points = _get(router, "entryPoints")
    if entry_key is not None:
        for index, name in enumerate(_string_list(entry_points, where, keys + (entry_key,))):
            # Traefik skips a router on an undefined entryPoint, so the service would silently vanish.
            if name not in ENTRY_POINTS:
                raise where.error(keys + (entry_key, index), "router %s uses entryPoint %r; forever-slurm's "
                                  "Traefik serves on %s" % (keys[-1], name, " and ".join(ENTRY_POINTS)))
    used_key, used = _get(router, "middlewares")
    if used_key is not None:
        for index, name in enumerate(_string_list(used, where, keys + (used_key,))):
            if "@" not in name and name not in middlewares:
                raise where.error(keys + (used_key, index), "router %s uses middleware %r, which "
                                  "http.middlewares does not define" % (keys[-1], name))
    priority_key, priority = _get(router, "priority")
    if priority_key is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise where.error(keys + (priority_key,), "priority must be a whole number")
    return target


def _check_middleware(middleware, middlewares, where, keys):
    _mapping(middleware, where, keys, "a middleware")
    if len(middleware) != 1:
        raise where.error(keys, "middleware %s must have exactly one type (one of %s)"
                          % (keys[-1], ", ".join(_MIDDLEWARE_TYPES)))
    _check_keys(middleware, _MIDDLEWARE_TYPES, where, keys)
    (type_key, options), = middleware.items()
    kind = {name.lower(): name for name in _MIDDLEWARE_TYPES}[type_key.lower()]
    keys = keys + (type_key,)
    allowed = _MIDDLEWARE_OPTIONS.get(kind)
    if allowed is None:
        if options is not None:
            _mapping(options, where, keys, kind)
        return
    _mapping(options, where, keys, kind)
    _check_keys(options, allowed, where, keys)
    if kind == "retry":
        attempts_key, attempts = _get(options, "attempts")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise where.error(keys + (attempts_key,), "retry needs 'attempts:' with a whole number above 0, like 3")
    elif kind == "stripPrefix":
        prefixes_key, prefixes = _get(options, "prefixes")
        if prefixes_key is None:
            raise where.error(keys, "stripPrefix needs 'prefixes:', a list like [\"/name\"]")
        _string_list(prefixes, where, keys + (prefixes_key,))
    elif kind == "chain":
        names_key, names = _get(options, "middlewares")
        for index, name in enumerate(_string_list(names, where, keys + (names_key,))):
            if "@" not in name and name not in middlewares:
                raise where.error(keys + (names_key, index), "chain uses middleware %r, which http.middlewares "
                                  "does not define" % name)


def _check_service(service_def, where, keys):
    """Returns the service's type, canonically spelled."""
    _mapping(service_def, where, keys, "a service")
    if len(service_def) != 1:
        raise where.error(keys, "service %s must have exactly one of %s" % (keys[-1], ", ".join(_SERVICE_TYPES)))
    _check_keys(service_def, _SERVICE_TYPES, where, keys)
    (type_key, body), = service_def.items()
    kind = {name.lower(): name for name in _SERVICE_TYPES}[type_key.lower()]
    if kind != "loadBalancer":
        return kind
    keys = keys + (type_key,)
    _mapping(body, where, keys, "loadBalancer")
    _check_keys(body, _LB_KEYS, where, keys)
    for name, allowed in (("healthCheck", _HEALTH_KEYS), ("passiveHealthCheck", _PASSIVE_KEYS),
                          ("sticky", _STICKY_KEYS), ("responseForwarding", _FORWARDING_KEYS)):
        key, value = _get(body, name)
        if key is not None:
            _mapping(value, where, keys + (key,), name)
            _check_keys(value, allowed, where, keys + (key,))
    sticky_key, sticky = _get(body, "sticky")
    cookie_key, cookie = _get(sticky, "cookie")
    if cookie_key is not None and cookie is not None:
        _mapping(cookie, where, keys + (sticky_key, cookie_key), "cookie")
        _check_keys(cookie, _COOKIE_KEYS, where, keys + (sticky_key, cookie_key))
    health_key, health = _get(body, "healthCheck")
    if health_key is not None:
        path_key, path = _get(health, "path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise where.error(keys + (health_key, path_key), "healthCheck needs 'path:' starting with '/', like "
                              "path: \"/health\"")
    servers_key, servers = _get(body, "servers")
    if servers_key is not None and servers is not None:
        if not isinstance(servers, list):
            raise where.error(keys + (servers_key,), "servers must be a list of '- url: \"http://host:port\"'")
        for index, server in enumerate(servers):
            _mapping(server, where, keys + (servers_key, index), "a server")
            _check_keys(server, _SERVER_KEYS, where, keys + (servers_key, index))
    return kind


def _check_no_braces(value, where, keys):
    """Traefik runs its files through Go templates, so '{{' anywhere would be executed, not served."""
    if isinstance(value, str):
        if "{{" in value:
            raise where.error(keys, "'{{' is not allowed in %s: Traefik treats its files as Go templates"
                              % (_dotted(keys) or "a value"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_no_braces(key, where, keys + (key,))
            _check_no_braces(item, where, keys + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_no_braces(item, where, keys + (index,))


def _namespaced(data, service):
    """Prefix middleware names with the service (the original's templates all call theirs 'retry', and in
    Traefik the first file to define a name wins), updating every reference in routers and chains."""
    http = _get(data, "http")[1]
    middlewares_key, middlewares = _get(http, "middlewares")
    if not middlewares:
        return data
    renames = {}
    for name in middlewares:
        if not name.startswith(service):
            new = "%s-%s" % (service, name)
            if new in middlewares:
                raise ConfigError("middleware %r would be renamed %r, which the template already defines; "
                                  "start its name with %s" % (name, new, service))
            renames[name] = new
    if not renames:
        return data
    http[middlewares_key] = {renames.get(name, name): body for name, body in middlewares.items()}

    def renamed(names):
        return [renames.get(name, name) for name in names] if isinstance(names, list) else names

    for router in (_get(http, "routers")[1] or {}).values():
        key, names = _get(router, "middlewares")
        if key is not None:
            router[key] = renamed(names)
    for body in http[middlewares_key].values():
        chain = _get(body, "chain")[1]
        key, names = _get(chain, "middlewares")
        if key is not None:
            chain[key] = renamed(names)
    return data
