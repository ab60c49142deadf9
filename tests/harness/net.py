"""Small loopback helpers shared by the e2e tests: a free port, one GET, a bounded wait."""

import http.client
import http.server
import socket
import threading
import time


def free_port():
    """ports.free_port for the harness, which stays free of src/ (bench scripts run it without)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port, path, timeout=5.0):
    """(status, body) of GET http://127.0.0.1:port/path; (None, error) when the connection fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as err:
        return None, str(err)
    finally:
        conn.close()


def wait_for(predicate, timeout, interval=0.02):
    """Poll until predicate() is truthy (returned) or timeout passes (None); bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return None


class LoopbackServer:
    """An HTTP server on a free 127.0.0.1 port, served from a thread; stop() ends it for sure."""

    def __init__(self, handler, threaded=False):
        cls = http.server.ThreadingHTTPServer if threaded else http.server.HTTPServer
        self.server = cls(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
