"""yamlish: the YAML subset reader (with line numbers) and the deterministic writer."""

import glob
import os

import pytest

from forever_slurm.systems import yamlish
from forever_slurm.common.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reads_the_original_template_shape():
    text = (
        "http:\n"
        "  routers:\n"
        "    r:\n"
        "      entryPoints:\n"
        "        - web\n"
        "      rule: \"PathPrefix(`/x`)\"\n"
        "  services:\n"
        "    x:\n"
        "      loadBalancer:\n"
        "        healthCheck:\n"
        "          #status: \"401\"  # commented out\n"
        "          status: 401  # Consider 401 Unauthorized as healthy\n"
        "        servers:\n"
        "          - url: \"http://xxxxx:12345\"\n"
        "          - url: 'http://yyyyy:54321'\n"
        "            weight: 0\n"
    )
    doc = yamlish.parse(text, "t.yml")
    lb = doc.data["http"]["services"]["x"]["loadBalancer"]
    assert doc.data["http"]["routers"]["r"] == {"entryPoints": ["web"], "rule": "PathPrefix(`/x`)"}
    assert lb["healthCheck"] == {"status": 401}
    assert lb["servers"] == [{"url": "http://xxxxx:12345"}, {"url": "http://yyyyy:54321", "weight": 0}]
    assert yamlish.line_of(doc.lines, ("http", "services", "x", "loadBalancer", "healthCheck", "status")) == 12
    assert yamlish.line_of(doc.lines, ("http", "services", "x", "loadBalancer", "servers", 1, "weight")) == 16
    assert yamlish.line_of(doc.lines, ("http", "services", "x", "loadBalancer", "servers", 1)) == 15
    # An unknown deeper key falls back to the nearest known parent's line.
    assert yamlish.line_of(doc.lines, ("http", "routers", "r", "nope", "deeper")) == 3


@pytest.mark.parametrize("text, expected", [
    ("a: 1\n", {"a": 1}),
    ("a: -7\n", {"a": -7}),
    ("a: 1.5\n", {"a": 1.5}),
    ("a: true\nb: False\n", {"a": True, "b": False}),
    ("a: null\nb: ~\nc:\n", {"a": None, "b": None, "c": None}),
    ("a: \"3\"\n", {"a": "3"}),
    ("a: '3'\n", {"a": "3"}),
    ("a: 'it''s'\n", {"a": "it's"}),
    ("a: \"tab\\tq\\\"\\u00e9\\\\\"\n", {"a": "tab\tq\"\u00e9\\"}),
    ("a: \"# not a comment\"  # a comment\n", {"a": "# not a comment"}),
    ("a: x#y\n", {"a": "x#y"}),
    ("a: http://h:1/p\n", {"a": "http://h:1/p"}),
    ("a: 500ms\n", {"a": "500ms"}),
    ("a: [web, \"b c\", 'd', 3]\n", {"a": ["web", "b c", "d", 3]}),
    ("a: []\nb: {}\n", {"a": [], "b": {}}),
    ("a: {k: v, n: [1, 2], e: {}}\n", {"a": {"k": "v", "n": [1, 2], "e": {}}}),
    ("a:\n- x\n- y\nb: 2\n", {"a": ["x", "y"], "b": 2}),
    ("a:   # note\n  b: 1\n", {"a": {"b": 1}}),
    ("\"quoted key\": 1\n'k2': 2\n", {"quoted key": 1, "k2": 2}),
    ("---\na: 1\n", {"a": 1}),
    ("# only a comment\n\n", {}),
    ("", {}),
    ("a:\n  - - 1\n    - 2\n  - k: v\n    j: w\n", {"a": [[1, 2], {"k": "v", "j": "w"}]}),
    ("a:\n  -\n    k: v\n", {"a": [{"k": "v"}]}),
    ("a:\n  -   k: v\n      j: w\n", {"a": [{"k": "v", "j": "w"}]}),
])
def test_load_values(text, expected):
    assert yamlish.parse(text, "t.yml").data == expected


@pytest.mark.parametrize("text, line, words", [
    ("a: 1\n\tb: 2\n", 2, "tab"),
    ("a:\n\t- x\n", 2, "tab"),
    ("a: &anchor 1\n", 1, "anchors"),
    ("a: 1\nb: *alias\n", 2, "aliases"),
    ("a: !!str 1\n", 1, "tags"),
    ("a: |\n  text\n", 1, "block scalars"),
    ("a: 1\n---\nb: 2\n", 2, "second YAML document"),
    ("a: 1\n...\n", 2, "end of document"),
    ("a:\n  b: 1\n   c: 2\n", 3, "bad indentation"),
    ("a:\n    b: 1\n  c: 2\n", 3, "bad indentation"),
    ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
    ("x:\n  a:\n    k: 1\n  a: 2\n", 4, "duplicate key"),
    ("a: \"open\n", 1, "not closed"),
    ("a: 'open\n", 1, "not closed"),
    ("a: [1, 2\n", 1, "not closed"),
    ("a: {k: v\n", 1, "not closed"),
    ("a: {k: \"v\" w}\n", 1, "expected ',' or '}'"),
    ("a: \"x\" y\n", 1, "unexpected text"),
    ("a: \"bad \\q\"\n", 1, "unknown escape"),
    ("a: b: c\n", 1, "': '"),
    ("a: - x\n", 1, "list item"),
    ("- a\n- b\n", 1, "mapping"),
    ("a:\n  b: 1\n  - c\n", 3, "list item"),
    ("a:\n  - x\n  y: 1\n", 3, "bad indentation"),
    ("a: 1\njust words\n", 2, "expected 'key: value'"),
    ("a:\n  b: long value\n    continued\n", 3, "continued"),
    ("? complex\n", 1, "complex keys"),
    ("%YAML 1.2\na: 1\n", 1, "directives"),
    ("  a: 1\n", 1, "indented"),
    ("a:\n  path: \"/h\\U00110000\"\n", 2, "beyond the last Unicode character"),
    ("a:\n  p: " + "[" * 3000 + "]" * 3000 + "\n", 2, "nested more than 40 levels"),
    ("".join(" " * (2 * i) + "k%d:\n" % i for i in range(3000)) + " " * 6000 + "x: 1\n", 42, "nested more than 40"),
])
def test_errors_name_the_line(text, line, words):
    with pytest.raises(ConfigError) as caught:
        yamlish.parse(text, "svc.yml").data
    err = caught.value
    assert err.line == line
    assert err.path == "svc.yml"
    assert words in err.message
    assert str(err).startswith("svc.yml:%d: " % line)


@pytest.mark.parametrize("obj", [
    {"a": 1, "b": [1, "two", True, None, 1.5], "c": {"d": {}, "e": []}},
    {"http": {"services": {"x": {"loadBalancer": {"servers": [{"url": "http://h:1", "weight": 0},
                                                               {"url": "http://g:2"}]}}}}},
    {"strings": ["", " lead", "trail ", "#hash", "a: b", "- x", "'q'", "\"dq\"", "back\\slash", "tab\tnl\n",
                 "\u00e9\u4e2d", "\u2028", "true", "null", "12", "1.5", "[x]", "{y}", "&a", "*b", "`rule`"]},
    {"weird keys": {"true": 1, "1": 2, "a b": 3, "x: y": 4, "": 5, "-k": 6}},
    {"nested": [[1, [2, 3]], [{"a": [{"b": 1}]}]]},
])
def test_round_trip(obj):
    text = yamlish.dump(obj)
    assert yamlish.parse(text, "round.yml").data == obj
    assert yamlish.dump(yamlish.parse(text, "round.yml").data) == text


def test_a_run_of_digits_too_long_for_a_number_stays_text():
    assert yamlish.parse("a: %s\nb: %s\n" % ("9" * 64, "9" * 4400), "svc.yml").data == {"a": int("9" * 64), "b": "9" * 4400}


def test_dump_is_sorted_quoted_and_plain_for_numbers():
    text = yamlish.dump({"b": {"z": "s", "a": 3}, "a": [True, "x"]})
    assert text == ('a:\n'
                    '  - true\n'
                    '  - "x"\n'
                    'b:\n'
                    '  a: 3\n'
                    '  z: "s"\n')


def test_dump_does_not_depend_on_insertion_order():
    one = {"x": 1, "y": {"b": 2, "a": 1}}
    two = {"y": {"a": 1, "b": 2}, "x": 1}
    assert yamlish.dump(one) == yamlish.dump(two)


def test_bundled_templates_round_trip():
    paths = sorted(glob.glob(os.path.join(REPO, "services", "*", "*.yml")))
    assert paths, "the repo should bundle service templates"
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            data = yamlish.parse(handle.read(), path).data
        assert yamlish.parse(yamlish.dump(data), path).data == data


def test_line_numbers_follow_newlines_only():
    text = "a: \"x\\fy\"\r\nb:\r\n  c: 1\r\n"
    doc = yamlish.parse(text, "crlf.yml")
    assert doc.data == {"a": "x\fy", "b": {"c": 1}}
    assert yamlish.line_of(doc.lines, ("b", "c")) == 3
    with pytest.raises(ConfigError) as caught:
        yamlish.parse("a: 1\n# form\ffeed in a comment\nb: 1\nb: 2\n", "ff.yml").data
    assert caught.value.line == 4
