"""Traefik's YAML from records: a service template parsed and checked (traefik_check), then the dynamic
config (the template, its names namespaced, exactly these servers) and the static config rendered.
Pure: no files are read or written here (traefik_files does that).

Each service's names are namespaced, so one service's file can never define another's router,
middleware or service (in Traefik the first file to define a name wins).
"""

import copy
import os
from typing import Dict, NamedTuple, Tuple

from ..common import urls
from . import yamlish
from . import traefik_schema as schema
from .traefik_check import check_service_name, find_key, has_feature, validate
from ..common.errors import ConfigError

MARKER = "# written by forever-slurm"
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC")
ACCESS_LOG_FIELDS = ("DownstreamStatus", "Duration", "RequestPath", "RouterName", "ServiceName", "ServiceURL",
                     "StartUTC")

# Rendered into every balancer that sets none, when the Traefik in use has it (3.6+): a server that
# refuses connections (a job killed without a drain) is out after two failed attempts, before the loop
# has even seen the job end; the active health check, or the window, brings it back.  Two, not one,
# so a single 5xx from a live server does not take it out.
PASSIVE_HEALTH_CHECK = {"failureWindow": "10s", "maxFailedAttempts": 2}
# A server the passive check took out comes back only at the next active check when there is one: with
# the original tool's `interval: 900s`, a Traefik that was stopped for a while (its login node paused)
# or two timeouts in a row kept healthy backends out for up to 15 minutes, 503 all along (bench/ha H2).
# Where we add the passive check, the active one runs at least this often.
ACTIVE_WITH_PASSIVE = 10.0
PASSIVE_SINCE = schema.LOAD_BALANCER["passiveHealthCheck"].since


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


def parse_template(text, path, service, traefik_version=None):
    """Template from a service's .yml text (traefik_files.load_template reads it; bundled templates come
    from pkgutil); ConfigError naming path:line for anything Traefik would reject."""
    doc = yamlish.parse(text, path)
    balancer = validate(doc.data, service, path, doc.lines, traefik_version)
    try:
        _namespaced(copy.deepcopy(doc.data), service, balancer)     # so `check` reports a clash too
    except ConfigError as exc:
        raise ConfigError(exc.message, path)
    return Template(service, doc.data, path, doc.lines, balancer)


def default_template(service, health_path="/"):
    """The template used when a service has no .yml: PathPrefix + stripPrefix, retry, an active health check
    (and the passive one, which render_dynamic adds where the Traefik in use has it)."""
    check_service_name(service)
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
    balancer = validate(data, service, path, {}, None)
    return Template(service, data, path, {}, balancer)


def health_path(template):
    """The loadBalancer's healthCheck path, or '/' when the template sets none."""
    check = _health_check(template)
    path = find_key(check, "path")[1] if check else None
    return path if isinstance(path, str) and path else "/"


def health_status(template):
    """The status the healthCheck expects (e.g. 401), or None when any 2xx/3xx counts as healthy."""
    check = _health_check(template)
    status = schema.go_text(find_key(check, "status")[1]) if check else None
    return int(status) if status is not None and status.strip().lstrip("+").isdigit() else None


def render_dynamic(service, template, servers, traefik_version=None, neighbours=(), passive=True):
    """The service's dynamic config: the template with its names namespaced, exactly these servers, and
    the passive health check where `traefik_version` (None: unknown) has it; passive=False removes any
    (a route to the wake proxy, whose 503 after a long wait must not take it out).

    `neighbours` are the other services sharing the watched directory: a name that falls in the
    namespace of a longer-named one (service 'a' naming a router 'a-b-router' beside service 'a-b')
    is refused, so two files can never define the same name (Traefik would keep only the first).
    """
    check_service_name(service)
    entries = [_server_entry(server) for server in servers]
    data = copy.deepcopy(template.data)
    lb = _balancer_of(data, template.balancer)
    for key in [k for k in lb if k.lower() == "servers"]:
        del lb[key]
    lb["servers"] = []
    if not passive:
        for key in [k for k in lb if k.lower() == "passivehealthcheck"]:
            del lb[key]
    elif has_feature(traefik_version, PASSIVE_SINCE) and find_key(lb, "passiveHealthCheck")[0] is None:
        lb["passiveHealthCheck"] = dict(PASSIVE_HEALTH_CHECK)
        active = find_key(lb, "healthCheck")[1]
        if isinstance(active, dict):
            key, interval = find_key(active, "interval")
            seconds = schema.duration_seconds(interval) if key is not None else None
            if seconds is not None and seconds > ACTIVE_WITH_PASSIVE:
                active[key] = "%ds" % ACTIVE_WITH_PASSIVE
    data = _namespaced(data, service, template.balancer)
    # Checked before the servers go in: _server_entry has checked those, and walking thousands of them
    # again at each pass would cost more than everything else in the render.
    validate(data, service, "<rendered config for %s>" % service, {}, traefik_version)
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


def _server_entry(server):
    url, weight = server.url, server.weight
    if not urls.valid_backend_url(url):
        raise ConfigError("server URL %r is not http(s)://host:port" % (url,))
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise ConfigError("server %s: weight must be a whole number >= 0, got %r" % (url, weight))
    entry = {"url": url}
    if weight != 1:
        entry["weight"] = weight
    return entry


def _balancer_of(data, name):
    services = find_key(find_key(data, "http")[1], "services")[1]
    return find_key(find_key(services, name)[1], "loadBalancer")[1]


def _health_check(template):
    lb = _balancer_of(template.data, template.balancer)
    return find_key(lb, "healthCheck")[1] if isinstance(lb, dict) else None


# -- names: one namespace per service -----------------------------------------------------------------

def _namespaced_name(name, service):
    return name if name == service or name.startswith(service + "-") else "%s-%s" % (service, name)


def _namespaced(data, service, balancer):
    """Prefix every router, middleware and service name with the service (the original's templates all
    call their middleware 'retry', and in Traefik the first file to define a name wins) and rename the
    balancer to the service itself (the access log's ServiceName then names it); references follow."""
    http = find_key(data, "http")[1]
    renames = {}
    for kind in ("routers", "middlewares", "services"):
        key, named = find_key(http, kind)
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

    for router in (find_key(http, "routers")[1] or {}).values():
        key, names = find_key(router, "middlewares")
        if key is not None:
            router[key] = renamed(names, middleware_names)
        key, target = find_key(router, "service")
        router[key] = service_names.get(schema.go_text(target), target)
    for body in (find_key(http, "middlewares")[1] or {}).values():
        chain_key, chain = find_key(body, "chain")
        key, names = find_key(chain, "middlewares")
        if key is not None:
            chain[key] = renamed(names, middleware_names)
        errors = find_key(body, "errors")[1]
        key, target = find_key(errors, "service")
        if key is not None and target is not None:
            errors[key] = service_names.get(schema.go_text(target), target)
    return data


def _check_neighbours(data, service, neighbours):
    http = find_key(data, "http")[1]
    longer = [other for other in neighbours if len(other) > len(service) and other.startswith(service + "-")]
    for kind in ("routers", "middlewares", "services"):
        for name in find_key(http, kind)[1] or {}:
            for other in longer:
                if name == other or name.startswith(other + "-"):
                    raise ConfigError("%s %r of %s would be taken for one of service %s's; rename it so it "
                                      "does not start with %s-" % (kind[:-1], name, service, other, other))

