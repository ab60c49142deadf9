"""Tests for the one set of value checks (validate.py) that settings, config and config --ssh share."""

import math
import random

import pytest

from forever_slurm.common import validate
from forever_slurm.common.validate import Invalid

# Each of these is accepted by float() or int() or str.isdigit(), and each must be refused.
NOT_PLAIN_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e3", "1_0", "\u0661\u0662",
                     "\uff11\uff12", "\u0968", "+5", "-5", "0x10", "5.", "", " ", "5 5", "٣.٥", "1e-3",
                     "9" * 19, "9" * 5000]


@pytest.mark.parametrize("text", NOT_PLAIN_NUMBERS)
def test_seconds_refuse_anything_but_a_plain_ascii_decimal(text):
    if text == "5.":
        assert validate.seconds(0, 10)(text) == 5.0       # "5." is plain enough
        return
    with pytest.raises(Invalid):
        validate.seconds(0, 1e9)(text)


@pytest.mark.parametrize("text", [t for t in NOT_PLAIN_NUMBERS if t != "5."])
def test_whole_numbers_and_ports_refuse_them_too(text):
    for check in (validate.whole_number(0, 10 ** 9), validate.port, validate.any_port):
        with pytest.raises(Invalid):
            check(text)


@pytest.mark.parametrize("text,value", [("10", 10.0), (" 2.5 ", 2.5), (".5", 0.5), ("0", 0.0), ("86400", 86400.0)])
def test_seconds_accept_plain_decimals_in_range(text, value):
    assert validate.seconds(0, 86400)(text) == value


@pytest.mark.parametrize("text", ["0.9", "86400.1", "100000"])
def test_seconds_out_of_range_name_the_range(text):
    with pytest.raises(Invalid, match="from 1 to 86400"):
        validate.seconds(1, 86400)(text)


def test_whole_number_bounds():
    check = validate.whole_number(1, 16)
    assert [check(t) for t in ("1", "16", " 007 ")] == [1, 16, 7]
    for text in ("0", "17", "1.0", "1000000000"):
        with pytest.raises(Invalid, match="from 1 to 16"):
            check(text)


def test_ports():
    assert validate.port("1024") == 1024 and validate.port("65535") == 65535
    assert validate.any_port("22") == 22
    for text in ("1023", "80", "65536", "0"):
        with pytest.raises(Invalid, match="1024 to 65535"):
            validate.port(text)
    for text in ("0", "65536"):
        with pytest.raises(Invalid, match="1 to 65535"):
            validate.any_port(text)


@pytest.mark.parametrize("text,value", [("yes", True), ("Y", True), (" on ", True), ("true", True), ("1", True),
                                        ("no", False), ("N", False), ("off", False), ("false", False), ("0", False)])
def test_yes_no(text, value):
    assert validate.yes_no(text) is value


@pytest.mark.parametrize("text", ["", "maybe", "yess", "\u0661", "ja"])
def test_yes_no_refuses_anything_else(text):
    with pytest.raises(Invalid, match="yes or no"):
        validate.yes_no(text)


@pytest.mark.parametrize("text", ["127.0.0.1", "0.0.0.0", "::1", "[::1]", "fe80::1", "login1", "login-1.cluster.org",
                                  "node_7", "localhost."])
def test_host_accepts_ip_literals_and_host_names(text):
    assert validate.host(text) == text


@pytest.mark.parametrize("text", ["", "   ", "-oProxyCommand=x", "a..b", "a b", "x" * 64, "host-", "256.1.1.1",
                                  "1.2.3", "\u0661\u0662\u0667.0.0.1", "bücher.de", "a/b", "[::1", "*", "a:b"])
def test_host_refuses_empty_and_non_addresses(text):
    with pytest.raises(Invalid):
        validate.host(text)


def test_empty_bind_says_why_it_is_refused():
    with pytest.raises(Invalid, match="every interface"):
        validate.host("")


def test_optional_reads_empty_as_not_set():
    check = validate.optional(validate.seconds(0, 10))
    assert check("") is None and check("  ") is None and check("3") == 3.0
    with pytest.raises(Invalid):
        check("nan")


@pytest.mark.parametrize("check", [validate.seconds(0.1, 86400), validate.whole_number(0, 1000), validate.port,
                                   validate.yes_no, validate.optional(validate.seconds(0, 100))])
def test_as_text_reads_back_to_the_same_value(check):
    rng = random.Random(11)
    candidates = ["%d" % rng.randint(0, 70000) for _ in range(200)]
    candidates += ["%.*f" % (rng.randint(0, 4), rng.uniform(0, 1000)) for _ in range(200)]
    candidates += ["yes", "no", "on", "0", "1", ""]
    accepted = 0
    for text in candidates:
        try:
            value = check(text)
        except Invalid:
            continue
        accepted += 1
        assert check(validate.as_text(value)) == value, text
    assert accepted >= 5


def test_as_text_spellings():
    assert [validate.as_text(v) for v in (True, False, None, 10.0, 2.5, 0.2, 7, "x")] == \
        ["yes", "no", "", "10", "2.5", "0.2", "7", "x"]


def test_random_garbage_only_ever_raises_invalid():
    """Whatever the text, a check returns a finite in-range value or raises Invalid, nothing else."""
    rng = random.Random(20261202)
    alphabet = "0123456789.+-eE_ x\t:/[]nainf\u0661\u0662\uff11\u00b2\u2028\x00\ufffd"
    checks = [(validate.seconds(0.2, 3600), 0.2, 3600), (validate.whole_number(0, 100), 0, 100),
              (validate.port, 1024, 65535), (validate.any_port, 1, 65535)]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for check, low, high in checks:
            try:
                value = check(text)
            except Invalid:
                continue
            assert math.isfinite(value) and low <= value <= high, (text, value)
        try:
            validate.host(text)
        except Invalid:
            pass
        try:
            validate.yes_no(text)
        except Invalid:
            pass


@pytest.mark.parametrize("name", ["svc\n", "svc\r", "svc ", " svc", "-svc", "", "s/v", "svc\x00", "sv\u00e9"])
def test_one_service_name_check_refuses_a_line_end_everywhere(tmp_path, name):
    """settings, the service folders and the Traefik writer share one check (a `^...$` with re.match
    let "svc\\n" through two of them)."""
    from forever_slurm.common import services, settings
    from forever_slurm.common.errors import ConfigError
    from forever_slurm.systems import traefik_check
    assert not validate.is_service_name(name)
    with pytest.raises(validate.Invalid):
        settings.service_name(name)
    with pytest.raises(ConfigError):
        services.load(settings.Layout(str(tmp_path)), name)
    with pytest.raises(ConfigError):
        traefik_check.check_service_name(name)


def test_a_service_name_may_have_dots_dashes_and_underscores():
    assert all(validate.is_service_name(n) for n in ("a", "llama-cpp-server", "gpu_node.v2", "0x"))
