#!/usr/bin/env python3
"""A tiny web service for forever-slurm demos: answers any path with its host and port.

Graceful stop, as any service behind forever-slurm should do it:
- SIGUSR1 (sent by `#SBATCH --signal=B:USR1@60` before the time limit): answer 503 on /health, so
  forever-slurm's readiness probe takes this backend out of Traefik, but keep serving.
- SIGTERM (scancel, or the time limit itself): the same, then exit after GRACE seconds, letting
  requests in flight finish.
"""

import http.server
import os
import signal
import socket
import socketserver
import sys
import threading

HOST = socket.gethostname()
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 22222
GRACE = float(os.environ.get("HELLO_GRACE_SECONDS", "8"))
draining = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
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

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = False          # server_close() waits for requests in flight
    block_on_close = True


def main():
    httpd = Server(("", PORT), Handler)

    stopping = []

    def drain(signum, frame):
        draining.set()
        print("hello-python: signal %d, /health answers 503 from now on" % signum, flush=True)

    def stop_later(signum, frame):
        drain(signum, frame)
        if not stopping:
            stopping.append(threading.Timer(GRACE, httpd.shutdown))
            stopping[0].start()
            print("hello-python: stopping in %.0fs" % GRACE, flush=True)

    signal.signal(signal.SIGUSR1, drain)
    signal.signal(signal.SIGTERM, stop_later)
    print("hello-python serving on port %d" % PORT, flush=True)
    httpd.serve_forever()
    httpd.server_close()


if __name__ == "__main__":
    main()
