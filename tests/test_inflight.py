"""inflight.py: counting Traefik's connections to a backend in /proc/net/tcp{,6} tables."""

import ipaddress
import socket
import threading

from forever_slurm.core import inflight

# Captured from this machine's /proc/net/tcp and tcp6 (columns after `st` trimmed): 127.0.0.1:18111 is
# 0100007F:46BF; a listening socket (0A), an established one to the backend (01), the backend's own
# accepted end (its local address is the backend, its remote one an ephemeral port), a TIME_WAIT (06).
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:46BF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:9C40 0100007F:46BF 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:46BF 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:9C41 0100007F:46BF 06 00000000:00000000 03:00000000 00000000     0        0 0 3
   4: 0A00020F:9C42 0B00020A:46BF 02 00000000:00000000 01:00000000 00000000     0        0 4 1
   5: garbage
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 0000000000000000FFFF00000100007F:9C43 0000000000000000FFFF00000100007F:46BF 01 00000000:00000000
   1: 00000000000000000000000001000000:9C44 00000000000000000000000001000000:46BF 01 00000000:00000000
"""


def test_parse_table_reads_remote_addresses_in_kernel_byte_order():
    rows = inflight.parse_table(TCP)
    assert len(rows) == 5
    assert rows[1] == (ipaddress.ip_address("127.0.0.1"), 18111, "01")
    assert rows[4] == (ipaddress.ip_address("10.2.0.11"), 18111, "02")
    six = inflight.parse_table(TCP6)
    assert six[0] == (ipaddress.ip_address("127.0.0.1"), 18111, "01")     # IPv4-mapped: as IPv4
    assert six[1] == (ipaddress.ip_address("::1"), 18111, "01")


def test_busy_connections_count_established_and_connecting_ones_to_the_backend_only():
    rows = inflight.parse_table(TCP) + inflight.parse_table(TCP6)
    local = {ipaddress.ip_address("127.0.0.1")}
    assert inflight.busy_connections(rows, local, 18111) == 2       # tcp row 1 and the mapped tcp6 row
    assert inflight.busy_connections(rows, {ipaddress.ip_address("10.2.0.11")}, 18111) == 1
    assert inflight.busy_connections(rows, local, 18112) == 0


def test_counts_are_unknown_when_nothing_can_be_read_or_resolved():
    def no_host(host):
        raise OSError("unknown host")
    urls = {"1": "http://127.0.0.1:18111", "2": "http://nowhere:1"}
    assert inflight.counts(urls, tables=lambda: None) == {"1": None, "2": None}
    rows = inflight.parse_table(TCP)
    got = inflight.counts(urls, tables=lambda: rows,
                          resolver=lambda h: no_host(h) if h == "nowhere" else {ipaddress.ip_address(h)})
    assert got == {"1": 1, "2": None}
    assert inflight.counts({}) == {}


def test_counts_a_real_open_connection_on_this_machine():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    thread.start()
    client = socket.create_connection(("127.0.0.1", port))
    thread.join(5)
    try:
        assert inflight.counts({"j": "http://localhost:%d" % port}) == {"j": 1}
    finally:
        client.close()
        accepted[0].close()
        server.close()
    assert inflight.counts({"j": "http://127.0.0.1:%d" % port}) == {"j": 0}
