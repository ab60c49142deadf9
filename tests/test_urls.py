"""common/urls: the one strict check of a backend URL from a job's Comment."""

import pytest

from forever_slurm.common import urls


@pytest.mark.parametrize("url, parts", [
    ("http://node1:8080", ("http", "node1", 8080)),
    ("https://node-1.cluster.example:443/", ("https", "node-1.cluster.example", 443)),
    ("http://10.1.2.3:1", ("http", "10.1.2.3", 1)),
    ("http://[::1]:65535", ("http", "[::1]", 65535)),
    ("http://[fd12::1:2]:9000/", ("http", "[fd12::1:2]", 9000)),
    # Slurm node names and what Go's resolver and URL parser accept: '_' anywhere, digits-only labels.
    ("http://gpu_node01:8000", ("http", "gpu_node01", 8000)),
    ("http://_gpu.rack_7.cluster:1", ("http", "_gpu.rack_7.cluster", 1)),
    ("http://node_:1", ("http", "node_", 1)),
    ("http://42.node7:1", ("http", "42.node7", 1)),
    # Loopback stays allowed (single-host clusters, the local test cluster).
    ("http://127.0.0.1:8080", ("http", "127.0.0.1", 8080)),
    ("http://localhost:8080", ("http", "localhost", 8080)),
    ("http://[::ffff:127.0.0.1]:8080", ("http", "[::ffff:127.0.0.1]", 8080)),
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
    ("http://-bad.example:80", "host name"), ("http://bad-.example:80", "host name"), ("http://a_b-:80", "host name"), ("http://a..b:80", "host name"), ("http://nöde:80", "host name"),
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


# Link-local and cloud metadata in every spelling a connection would reach them by.
@pytest.mark.parametrize("host", [
    "169.254.169.254", "169.254.0.1", "[fe80::1]", "[FE80::a:b]", "[febf::1]", "[fd00:ec2::254]", "100.100.100.200",
    "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[::169.254.169.254]", "[::ffff:0:a9fe:a9fe]",
    "[64:ff9b::169.254.169.254]", "[64:ff9b:1:a9fe:a9:fe00::]", "[2002:a9fe:a9fe::1]",
    "[2001:0:4136:e378:8000:63bf:5601:5601]",          # Teredo, client 169.254.169.254 (obfuscated)
])
def test_link_local_and_metadata_addresses_are_refused(host):
    with pytest.raises(ValueError, match="link-local|metadata"):
        urls.parse_backend_url("http://%s:80" % host)
    assert urls.forbidden_address(host.strip("[]"))


@pytest.mark.parametrize("host", [
    "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe", "169.254.43518", "169.16689662",
    "010.0.0.1", "0x7f.1", "127.1", "node.0x1f", "rack1.42", "1.2.3.4.5", "[fe80::1%25eth0]", "[fe80::1%eth0]",
])
def test_numeric_spellings_and_zones_are_refused_as_hosts(host):
    """What inet_aton reads as a number is an IPv4 address, accepted only in its plain spelling."""
    with pytest.raises(ValueError, match="host name|IPv6"):
        urls.parse_backend_url("http://%s:80" % host)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.2", "fd12::1", "::ffff:10.1.1.1",
                                     "2001:db8::1", "169.253.255.255", "169.255.0.0", "fec0::1"])
def test_other_addresses_are_allowed(address):
    assert urls.forbidden_address(address) == ""
