"""ports.free_port: the one free-port helper."""

import socket

from forever_slurm.systems import jobside
from forever_slurm.common import ports


def test_free_port_can_be_bound_at_once_on_loopback_and_every_interface():
    for port in (ports.free_port(), ports.free_port("127.0.0.1"), jobside.free_port()):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        finally:
            sock.close()
        assert 1024 <= port <= 65535
