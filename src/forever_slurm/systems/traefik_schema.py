"""What a service template may hold, as data: each key, the type of its value, the Traefik version that added it.

Traefik's file provider turns every scalar into text and parses it by the Go field's type
(github.com/traefik/paerser: file/raw_node.go, parser/element_fill.go), so a value is acceptable
when its text parses the way Go parses that type: `interval: 10` is ten seconds, `status: "401"`
is the number 401, `interval: "banana"` fails and would make Traefik reject every service's file.
The checkers below copy those rules.  Adding a key is one line in a mapping below; adding a type is
one entry in TYPES.  Keys are taken from pkg/config/dynamic (Traefik 3.7) and every one is loaded
by the real Traefik in tests/e2e/test_traefik_real.py.
"""

import math
import re
from typing import NamedTuple, Tuple

_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT_RE = re.compile(r"^[+-]?[0-9]+\Z")
# Go's time.ParseDuration: "0", or one or more <number><unit>, with an optional sign in front.
_DURATION_RE = re.compile(r"^[+-]?(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)\Z")
_GO_BOOLS = ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False")
_STATUS_RANGE_RE = re.compile(r"^([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?\Z")
# Names we write as YAML keys and Traefik joins with '@provider': the service-name alphabet.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def go_text(value):
    """The text paerser makes of a YAML scalar (file/raw_node.go getSimpleValue), or None for a collection."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        text = "%.6f" % value
        return text[:-7] if text.endswith(".000000") else text
    if isinstance(value, str):
        return value
    return None


def _is_int(text):
    """A whole number Go's int64 holds (20 characters at most: int() of a huge one would raise)."""
    return len(text) <= 20 and bool(_INT_RE.match(text)) and _INT64[0] <= int(text) <= _INT64[1]


def _is_duration(text):
    """paerser's setDuration: a whole number is seconds, else Go's duration syntax ("10s", "1m30s", "500ms")."""
    return _is_int(text) or bool(_DURATION_RE.match(text))


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def duration_seconds(value):
    """Seconds of a duration Traefik accepts (a whole number is seconds, else "10s", "1m30s"), or None."""
    text = go_text(value)
    if text is None or not _is_duration(text):
        return None
    if _is_int(text):
        return float(int(text))
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))


def _check_scalar(test):
    def check(value):
        text = go_text(value)
        return text is not None and test(text)
    return check


def _check_list(item_check):
    def check(value):
        return isinstance(value, list) and all(item_check(item) for item in value)
    return check


def _check_map(value_check):
    def check(value):
        return isinstance(value, dict) and all(isinstance(k, str) and value_check(v) for k, v in value.items())
    return check


def _is_status_range(text):
    match = _STATUS_RANGE_RE.match(text)
    return bool(match) and (match.group(2) is None or int(match.group(1)) <= int(match.group(2)))


_string = _check_scalar(lambda text: True)
_status = _check_scalar(lambda text: _is_int(text) and 100 <= int(text) <= 599)
_status_range = _check_scalar(_is_status_range)


class Type(NamedTuple):
    check: object        # value -> bool, after None (Traefik skips null values) has been let through
    expected: str        # what a message says the value should be


# One entry per value type. The reference types are checked further in traefik_check.py, which knows the
# service's own names; here they only need the right shape.
TYPES = {
    "bool": Type(_check_scalar(lambda text: text in _GO_BOOLS), "true or false"),
    "int": Type(_check_scalar(_is_int), "a whole number, like 3"),
    "count": Type(_check_scalar(lambda text: _is_int(text) and int(text) >= 0), "a whole number >= 0"),
    "duration": Type(_check_scalar(_is_duration), "a duration like \"10s\", \"500ms\", \"1m30s\" or a whole "
                                                  "number of seconds"),
    "string": Type(_string, "text"),
    "path": Type(_check_scalar(lambda text: text.startswith("/")), "a path starting with '/', like \"/health\""),
    "paths": Type(_check_list(_check_scalar(lambda text: text.startswith("/"))),
                  "a list of paths starting with '/', like [\"/name\"]"),
    "strings": Type(_check_list(_string), "a list of texts, like [\"a\", \"b\"]"),
    "string_map": Type(_check_map(_string), "a mapping of names to texts, like {X-Probe: \"yes\"}"),
    "status": Type(_status, "an HTTP status number from 100 to 599, like 401"),
    "status_ranges": Type(_check_list(_status_range), "a list of statuses or ranges, like [\"502\", \"500-599\"]"),
    # References to the service's own names (checked in traefik_check.py) and the router's rule and priority.
    "entry_points": Type(_check_list(_check_scalar(lambda text: bool(text))), "a list of names, like [web]"),
    "middleware_refs": Type(_check_list(_check_scalar(lambda text: bool(text))),
                            "a list of middleware names from this file"),
    "service_ref": Type(_check_scalar(lambda text: bool(text)), "the name of a service in this file"),
    "rule": Type(_check_scalar(lambda text: bool(text.strip())), "a rule, like \"PathPrefix(`/name`)\""),
    "priority": Type(_check_scalar(_is_int), "a whole number"),
}


class Key(NamedTuple):
    kind: object                 # a TYPES name, a dict (a nested mapping), a ListOf or a Named
    since: Tuple[int, ...] = ()  # the Traefik version that added it; () for every v3
    # Traefik refuses an empty mapping ("cannot be a standalone element", paerser nodes_metadata.go)
    # unless the Go field is tagged allowEmpty; nulls do not count, Traefik drops them first.
    allow_empty: bool = False


class ListOf(NamedTuple):
    """A list of mappings, like loadBalancer.servers."""
    item: dict


class OneOf(NamedTuple):
    """A mapping with exactly one key, its type: a middleware (retry, stripPrefix...) or a service.
    A choice is its options' mapping, or a Key around it (to allow an empty one)."""
    choices: dict


class Named(NamedTuple):
    """Names chosen by the template (routers, middlewares, services), each holding `item`."""
    item: object


def _keys(**fields):
    """A mapping schema; a plain string is shorthand for Key(that type)."""
    return {name: value if isinstance(value, Key) else Key(value) for name, value in fields.items()}


_IP_STRATEGY = _keys(depth="count", excludedIPs="strings", ipv6Subnet="count")
_SOURCE_CRITERION = _keys(ipStrategy=Key(_IP_STRATEGY), requestHeaderName="string", requestHost="bool")

HEALTH_CHECK = _keys(
    scheme="string", mode="string", path="path", method="string", status="status", port="count",
    interval="duration", unhealthyInterval=Key("duration", (3, 5)), timeout="duration", hostname="string",
    followRedirects="bool", headers="string_map")

PASSIVE_HEALTH_CHECK = _keys(failureWindow="duration", maxFailedAttempts="count")

LOAD_BALANCER = _keys(
    servers=Key(ListOf(_keys(url="string", weight="count", preservePath="bool"))),
    strategy="string",
    sticky=Key(_keys(cookie=Key(_keys(name="string", secure="bool", httpOnly="bool", sameSite="string",
                                      maxAge="int", path="string", domain="string"), allow_empty=True)),
               allow_empty=True),
    healthCheck=Key(HEALTH_CHECK),
    passiveHealthCheck=Key(PASSIVE_HEALTH_CHECK, (3, 6)),
    passHostHeader="bool",
    responseForwarding=Key(_keys(flushInterval="duration")))

MIDDLEWARES = {
    "addPrefix": _keys(prefix="path"),
    "basicAuth": _keys(users="strings", usersFile="string", realm="string", removeHeader="bool",
                       headerField="string"),
    "buffering": _keys(maxRequestBodyBytes="count", memRequestBodyBytes="count", maxResponseBodyBytes="count",
                       memResponseBodyBytes="count", retryExpression="string"),
    "chain": _keys(middlewares="middleware_refs"),
    "circuitBreaker": _keys(expression="string", checkPeriod="duration", fallbackDuration="duration",
                            recoveryDuration="duration", responseCode="status"),
    "compress": Key(_keys(excludedContentTypes="strings", includedContentTypes="strings",
                          minResponseBodyBytes="count", encodings="strings", defaultEncoding="string"),
                    allow_empty=True),
    "contentType": Key(_keys(autoDetect="bool"), allow_empty=True),
    "errors": _keys(status="status_ranges", service="service_ref", query="string"),
    "headers": _keys(
        customRequestHeaders="string_map", customResponseHeaders="string_map",
        accessControlAllowCredentials="bool", accessControlAllowHeaders="strings",
        accessControlAllowMethods="strings", accessControlAllowOriginList="strings",
        accessControlAllowOriginListRegex="strings", accessControlExposeHeaders="strings",
        accessControlMaxAge="int", addVaryHeader="bool", allowedHosts="strings", hostsProxyHeaders="strings",
        frameDeny="bool", contentTypeNosniff="bool", browserXssFilter="bool", contentSecurityPolicy="string",
        referrerPolicy="string", permissionsPolicy="string"),
    "inFlightReq": _keys(amount="count", sourceCriterion=Key(_SOURCE_CRITERION)),
    "ipAllowList": _keys(sourceRange="strings", ipStrategy=Key(_IP_STRATEGY), rejectStatusCode="status"),
    "rateLimit": _keys(average="count", period="duration", burst="count", sourceCriterion=Key(_SOURCE_CRITERION)),
    "redirectRegex": _keys(regex="string", replacement="string", permanent="bool"),
    "redirectScheme": _keys(scheme="string", port="string", permanent="bool"),
    "replacePath": _keys(path="path"),
    "replacePathRegex": _keys(regex="string", replacement="string"),
    "retry": _keys(attempts="count", initialInterval="duration", timeout=Key("duration", (3, 7)),
                   maxRequestBodyBytes=Key("count", (3, 7)), status=Key("status_ranges", (3, 7)),
                   disableRetryOnNetworkError=Key("bool", (3, 7)), retryNonIdempotentMethod=Key("bool", (3, 7))),
    "stripPrefix": _keys(prefixes="paths", forceSlash="bool"),
    "stripPrefixRegex": _keys(regex="strings"),
}

ROUTER = _keys(
    entryPoints="entry_points", middlewares="middleware_refs", service="service_ref", rule="rule",
    ruleSyntax="string", priority="priority",
    observability=Key(_keys(accessLogs="bool", metrics="bool", tracing="bool")))

# forever-slurm fills one loadBalancer per service; weighted, mirroring and failover services would
# only point at other services, which this file cannot own beyond that one.
SERVICE = {"loadBalancer": LOAD_BALANCER}

TEMPLATE = _keys(http=Key(_keys(
    routers=Key(Named(ROUTER)),
    middlewares=Key(Named(OneOf(MIDDLEWARES))),
    services=Key(Named(OneOf(SERVICE))))))

# Known to Traefik but refused here, with the reason a message gives.
REFUSED = {
    "serversTransport": "it names a transport defined outside this file; forever-slurm's static config "
                        "sets the dial timeout for every service",
    "tls": "forever-slurm's Traefik serves plain HTTP on its 'web' entryPoint",
    "weighted": "forever-slurm fills one loadBalancer per service",
    "mirroring": "forever-slurm fills one loadBalancer per service",
    "failover": "forever-slurm fills one loadBalancer per service",
    "plugin": "plugins are not loaded by forever-slurm's Traefik",
    "forwardAuth": "it sends requests to an address outside the service's own jobs",
}


def version_text(version):
    return ".".join(str(part) for part in version)
