"""Is a service template one Traefik accepts, and does it keep to its own service? Pure checks.

Traefik's file provider rejects the WHOLE update when one file in the watched directory is
invalid (YAML error, unknown key, wrong type), which freezes routing for every service until
the file is fixed.  So every template is checked against traefik_schema (keys, value types, the
Traefik version that added a key) and errors name their file and line.  Each service's references
and rules are confined to itself, so one service's file can neither break nor shadow another's.
Keys are matched case-insensitively, as Traefik does.
"""

import re

from . import yamlish
from . import traefik_schema as schema
from ..common import validate as validate_mod
from ..common.errors import ConfigError

ENTRY_POINTS = ("web",)
MAX_PRIORITY = 1000000   # far below the priorities Traefik keeps for its own routers


def has_feature(version, since):
    """True when Traefik `version` (a tuple, or None when unknown) has a feature added in `since`."""
    return not since or (version is not None and tuple(version) >= tuple(since))


def check_service_name(service):
    if not validate_mod.is_service_name(service):
        raise ConfigError("%r is not a service name (letters, digits, . _ -, no spaces)" % (service,))


def find_key(mapping, name):
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
            if not isinstance(name, str) or not schema.NAME_RE.fullmatch(name):
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

def validate(data, service, path, lines, version):
    """Checks a template (or a rendered config) for the Traefik `version` (None: unknown); a ConfigError
    names path:line (lines: from yamlish). Returns the name of the loadBalancer service that gets the servers."""
    where = _Where(path, lines)
    _check_duplicates(data, where)
    _Walker(where, version).mapping(data, schema.TEMPLATE, ())
    http_key, http = find_key(data, "http")
    if http_key is None or http is None:
        raise where.error((), "no 'http:' section; a service template needs http.routers and http.services "
                              "(see services/hello-python/hello-python.yml)")
    top = (http_key,)
    routers_key, routers = find_key(http, "routers")
    services_key, services = find_key(http, "services")
    middlewares_key, middlewares = find_key(http, "middlewares")
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
        _check_balancer(find_key(service_def, "loadBalancer"), where, top + (services_key, name))
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
    rule_key, rule = find_key(router, "rule")
    if rule is None:
        raise where.error(keys, "router %s needs a rule, like rule: \"PathPrefix(`/%s`)\"" % (keys[-1], service))
    target_key, target = find_key(router, "service")
    if target is None:
        raise where.error(keys, "router %s needs 'service: <name of an http.services entry>'" % keys[-1])
    _own(schema.go_text(target), services, where, keys + (target_key,), "service")
    entry_key, entry_points = find_key(router, "entryPoints")
    for index, name in enumerate(entry_points or []):
        # Traefik skips a router on an undefined entryPoint, so the service would silently vanish.
        if schema.go_text(name) not in ENTRY_POINTS:
            raise where.error(keys + (entry_key, index), "router %s uses entryPoint %r; forever-slurm's "
                              "Traefik serves on %s" % (keys[-1], name, " and ".join(ENTRY_POINTS)))
    used_key, used = find_key(router, "middlewares")
    for index, name in enumerate(used or []):
        _own(schema.go_text(name), middlewares, where, keys + (used_key, index), "middleware")
    priority_key, priority = find_key(router, "priority")
    _check_confined(schema.go_text(rule), None if priority is None else int(schema.go_text(priority)), service,
                    where, keys, rule_key, priority_key)
    return schema.go_text(target)


def _check_middleware(middleware, middlewares, services, where, keys):
    (type_key, options), = middleware.items()
    kind = type_key.lower()
    keys = keys + (type_key,)
    if kind == "retry":
        attempts_key, attempts = find_key(options, "attempts")
        if attempts is None or int(schema.go_text(attempts)) < 1:
            raise where.error(keys + ((attempts_key,) if attempts_key else ()),
                              "retry needs 'attempts:' with a whole number above 0, like 3")
    elif kind == "stripprefix":
        if find_key(options, "prefixes")[1] is None:
            raise where.error(keys, "stripPrefix needs 'prefixes:', a list like [\"/name\"]")
    elif kind == "chain":
        names_key, names = find_key(options, "middlewares")
        for index, name in enumerate(names or []):
            _own(schema.go_text(name), middlewares, where, keys + (names_key, index), "middleware")
    elif kind == "errors":
        service_key, target = find_key(options, "service")
        if target is not None:
            _own(schema.go_text(target), services, where, keys + (service_key,), "service")


def _check_balancer(found, where, keys):
    lb_key, lb = found
    if lb is None:
        return
    health_key, health = find_key(lb, "healthCheck")
    if health is not None and find_key(health, "path")[1] is None:
        raise where.error(keys + (lb_key, health_key), "healthCheck needs 'path:' starting with '/', like "
                          "path: \"/health\"")


# -- rules: a router stays inside its service's own path --------------------------------------------

# Arguments: each starts with ` or ", so the spaces between two of them belong to one \s* only (two
# \s* side by side would make a rule that does not parse cost exponential time to refuse).
_TOKEN_RE = re.compile(r"\s*(?:(&&)|(\|\|)|(!)|(\()|(\))|([A-Za-z][A-Za-z0-9]*)\("
                       r"(\s*(?:(?:`[^`]*`|\"(?:[^\"\\]|\\.)*\")\s*(?:,\s*)?)*)\s*\))")
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
