"""The one way to find a free TCP port: ask the kernel (bind to port 0)."""

import socket


def free_port(host="127.0.0.1"):
    """A port the kernel reports free on host right now; whoever needs it should bind it at once
    (between this call and that bind another program may take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host.strip("[]"), 0))
        return sock.getsockname()[1]
    finally:
        sock.close()
