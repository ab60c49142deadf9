"""common/urls: the one strict check of a backend URL from a job's Comment."""

import pytest

from forever_slurm.common import urls


@pytest.mark.parametrize("url, parts", [
    ("http://node1:8080", ("http", "node1", 8080)),
    ("https://node-1.cluster.example:443/", ("https", "node-1.cluster.example", 443)),
    ("http://10.1.2.3:1", ("http", "10.1.2.3", 1)),
    ("http://[::1]:65535", ("http", "[::1]", 65535)),
    ("http://[fe80::1:2]:9000/", ("http", "[fe80::1:2]", 9000)),
])
def test_accepts_host_port_urls(url, parts):
    parsed = urls.parse_backend_url(url)
    assert tuple(parsed) == parts
    assert parsed.text == url.rstrip("/")
    assert urls.valid_backend_url(url)


@pytest.mark.parametrize("url, why", [
    ("http://node1:0", "outside"), ("http://node1:65536", "outside"), ("http://node1:99999", "outside"),
    ("ftp://node1:80", "not http"), ("http://node1", "not http"), ("http://node1:80/path", "not http"),
    ("http://[::g]:80", "IPv6"), ("http://[10.0.0.1]:80", "IPv6"), ("http://999.1.1.1:80", "host name"),
    ("http://-bad.example:80", "host name"), ("http://a..b:80", "host name"), ("http://nöde:80", "host name"),
    ("http://%s:80" % ("a" * 64), "host name"), ("http://node1:８０", "not http"), (None, "not text"),
    ("http://node1:80\n", "not http"),
])
def test_refuses_anything_else_saying_why(url, why):
    with pytest.raises(ValueError) as caught:
        urls.parse_backend_url(url)
    assert why in str(caught.value)
    assert not urls.valid_backend_url(url)


def test_hostname_length_limit_is_253():
    label = "a" * 63
    assert urls.valid_hostname(".".join([label] * 3) + "." + "b" * 61)        # 253 characters
    assert not urls.valid_hostname(".".join([label] * 4))                     # 255 characters
    assert not urls.valid_hostname("")
