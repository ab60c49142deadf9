#!/usr/bin/env python3
"""A tiny web service for forever-slurm demos: answers any path with its host and port.

Two query parameters make it behave like a busy LLM server, to watch min-max scaling and drains:
?delay=S answers after S seconds (at most 600); ?stream=N sends N lines, one every half second.

Graceful stop, as any service behind forever-slurm should do it:
- SIGUSR1 (sent by `#SBATCH --signal=B:USR1@60` before the time limit): answer 503 on /health, so
  forever-slurm's readiness probe takes this backend out of Traefik, but keep serving.
- SIGTERM (scancel, or the time limit itself): the same, then exit after GRACE seconds, letting
  requests in flight finish.
"""

import http.server
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time

HOST = socket.gethostname()
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 22222
GRACE = float(os.environ.get("HELLO_GRACE_SECONDS", "8"))
draining = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        delay = re.search(r"[?&]delay=([0-9.]+)", self.path)
        stream = re.search(r"[?&]stream=([0-9]+)", self.path)
        if stream and self.path != "/health":
            return self.stream(min(int(stream.group(1)), 1200))
        if delay:
            time.sleep(min(float(delay.group(1)), 600.0))
        if self.path == "/health":
            status, body = (503, b"draining\n") if draining.is_set() else (200, b"ok\n")
        else:
            incoming_url = "http://%s:%d%s" % (self.client_address[0], PORT, self.path)
            status = 200
            body = ("Hello, Python from %s:%d ! You accessed: %s\n" % (HOST, PORT, incoming_url)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def stream(self, lines):
        """HTTP/1.0 without a length: each line is sent as it is made, the end is the connection's close."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        for number in range(lines):
            self.wfile.write(("line %d of %d from %s:%d\n" % (number + 1, lines, HOST, PORT)).encode())
            self.wfile.flush()
            time.sleep(0.5)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = False          # server_close() waits for requests in flight
    block_on_close = True


def main():
    httpd = Server(("", PORT), Handler)
    stop_at = []

    # Signal handlers only set flags: taking a lock there (starting a thread, printing) can deadlock
    # with the main thread, which may hold that very lock when the signal arrives.
    def drain(signum, frame):
        draining.set()

    def stop_later(signum, frame):
        draining.set()
        if not stop_at:
            stop_at.append(time.time() + GRACE)

    signal.signal(signal.SIGUSR1, drain)
    signal.signal(signal.SIGTERM, stop_later)
    serving = threading.Thread(target=httpd.serve_forever, daemon=True)
    serving.start()
    print("hello-python serving on port %d" % PORT, flush=True)
    said = False
    while not stop_at or time.time() < stop_at[0]:
        if draining.is_set() and not said:
            print("hello-python: draining, /health answers 503%s"
                  % (" (stopping in %.0fs)" % GRACE if stop_at else ""), flush=True)
            said = True
        time.sleep(0.2)
    httpd.shutdown()
    httpd.server_close()


if __name__ == "__main__":
    main()
