"""Templates built from traefik_schema: one per schema key, holding a value of the right or the wrong type.

Shared by the unit tests (every wrong value refused with its line) and the real-Traefik test (a sample of
the accepted ones must load in Traefik). Values come from a seeded random.Random, so runs repeat.
"""

import copy
import json
import string

from forever_slurm.systems import traefik_schema as schema

SERVICE = "svc"
ROUTER = "svc-router"
BASE = {"http": {
    "routers": {ROUTER: {"entryPoints": ["web"], "rule": "PathPrefix(`/svc/`)", "service": SERVICE,
                         "middlewares": ["svc-retry"]}},
    "middlewares": {"svc-retry": {"retry": {"attempts": 2}}},
    "services": {SERVICE: {"loadBalancer": {"servers": [], "healthCheck": {"path": "/h"}}}},
}}
# What a middleware of each type needs besides the key under test.
REQUIRED = {"retry": {"attempts": 2}, "stripPrefix": {"prefixes": ["/svc"]}}


def _word(rng, alphabet=string.ascii_letters, low=1, high=12):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def good_values(kind, rng):
    """Values Traefik parses as `kind` (a TYPES name), a few fixed and a few random."""
    number = rng.randint(0, 10 ** 6)
    unit = rng.choice(["ns", "us", "ms", "s", "m", "h"])
    return {
        "bool": [True, False, "true", "False", "1", "t", rng.choice(["T", "0", "f", "TRUE"])],
        "int": [0, -3, number, str(number), 7.0],
        "count": [0, number, str(number)],
        "duration": ["10s", "500ms", "1m30s", "0", 10, str(number), "%d%s" % (number, unit), "1.5h", ".5s"],
        "string": [_word(rng), number, True, "with spaces and `ticks`"],
        "path": ["/", "/" + _word(rng)],
        "paths": [[], ["/" + _word(rng), "/"]],
        "strings": [[], [_word(rng), _word(rng)], [number]],
        "string_map": [{"X-" + _word(rng): _word(rng)}],
        "status": [200, 401, str(rng.randint(100, 599))],
        "status_ranges": [["502"], ["500-599", str(rng.randint(100, 599))]],
        "entry_points": [["web"]],
        "middleware_refs": [[], ["svc-retry"]],
        "service_ref": [SERVICE],
        "rule": ["PathPrefix(`/svc/`)", "Path(`/svc`) && Method(`GET`)",
                 "(Path(`/svc`) || PathPrefix(`/svc/%s`)) && !Method(`POST`)" % _word(rng, string.ascii_lowercase)],
        "priority": [0, 100, rng.randint(100, 10 ** 6), "500"],
    }[kind]


def bad_values(kind, rng):
    """Values Traefik would refuse as `kind` (or forever-slurm refuses: other services' names, escaping rules)."""
    junk = _word(rng)
    collections = [[junk], {junk: 1}]
    numeric_junk = ["banana", junk, 1.5, "1e3", "10 s", "", "9223372036854775808"]
    return {
        "bool": ["banana", junk, 2, "yes", "on", 1.5] + collections,
        "int": numeric_junk + collections,
        "count": numeric_junk + [-1, -rng.randint(1, 10 ** 6)] + collections,
        "duration": ["banana", junk, "10sec", "s", "1.5", 1.5, "10 s", "1h 30m", ""] + collections,
        "string": collections,
        "path": ["health", junk, 5] + collections,
        "paths": ["/a", ["a"], [["/a"]], [{"a": 1}]],
        "strings": [junk, [[1]], [{"a": 1}], {"a": "b"}],
        "string_map": [[junk], junk, {"a": [1]}, {"a": {"b": 1}}, {}, {"a": None}],
        "status": [99, 600, "abc", 401.5, True, rng.randint(600, 10 ** 6)] + collections,
        "status_ranges": [["abc"], ["600"], "502", ["599-500"], [junk], [{"a": 1}]],
        "entry_points": [["websecure"], ["traefik"], "web", [junk + "x"]],
        "middleware_refs": [["noop@internal"], ["x@file"], [junk + "-missing"], "svc-retry"],
        "service_ref": ["api@internal", "noop@internal", "other", junk + "-x@file", ["svc"]],
        "rule": ["PathPrefix(`/`)", "Host(`example.org`)", "PathPrefix(`/other`)", "PathPrefix(`/svcx/`)",
                 "PathPrefix(`/svc/`) || PathPrefix(`/x`)", "!PathPrefix(`/svc/`)", "PathRegexp(`/svc.*`)",
                 "Path(`/svc`)", junk, ["PathPrefix(`/svc/`)"]],
        "priority": ["high", 1.5, 17, 1, 10 ** 7, [5]],
    }[kind]


def leaves(fields=schema.TEMPLATE, keys=()):
    """(key path, TYPES name, since) for every scalar-typed key the schema allows, at a place in BASE."""
    for name, field in sorted(fields.items()):
        path = keys + (name,)
        kind = field.kind
        if path == ("http", "routers"):
            for item in leaves(kind.item, path + (ROUTER,)):
                yield item
        elif path == ("http", "services"):
            for item in leaves(kind.item.choices["loadBalancer"], path + (SERVICE, "loadBalancer")):
                yield item
        elif path == ("http", "middlewares"):
            for middleware, options in sorted(kind.item.choices.items()):
                options = options.kind if isinstance(options, schema.Key) else options
                for item in leaves(options, path + ("m-" + middleware.lower(), middleware)):
                    yield item
        elif isinstance(kind, schema.ListOf):
            for item in leaves(kind.item, path + (0,)):
                yield item
        elif isinstance(kind, dict):
            for item in leaves(kind, path):
                yield item
        else:
            yield path, kind, field.since


def with_value(path, value, data=None):
    """BASE (or `data`) with `value` at `path`, building the mappings (and the one list item) on the way."""
    data = copy.deepcopy(BASE if data is None else data)
    node = data
    for index, key in enumerate(path[:-1]):
        following = path[index + 1]
        if isinstance(key, int):
            while len(node) <= key:
                node.append({"url": "http://127.0.0.1:1"})
            node = node[key]
            continue
        if key not in node:
            if path[:2] == ("http", "middlewares") and index == 3:
                node[key] = copy.deepcopy(REQUIRED.get(key, {}))
            else:
                node[key] = [] if isinstance(following, int) else {}
        node = node[key]
    node[path[-1]] = value
    return data


def renamed(data, service):
    """The same template for another service name (its names, references and rules follow)."""
    return json.loads(json.dumps(data).replace("svc", service))



def sections():
    """Key paths whose value must be a mapping (a router, a middleware's options, healthCheck, sticky...)
    or a list of mappings (servers), from the prefixes of the leaves."""
    found = []
    for path, _, _ in leaves():
        for cut in range(3, len(path)):
            prefix = path[:cut]
            if not isinstance(prefix[-1], int) and prefix not in found:
                found.append(prefix)
    return found
