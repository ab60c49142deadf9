#!/usr/bin/env python3
"""A tiny web service for forever-slurm demos: answers any path with its host and port."""

import http.server
import signal
import socket
import socketserver
import sys
import threading

HOST = socket.gethostname()
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 22222


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        incoming_url = "http://%s:%d%s" % (self.client_address[0], PORT, self.path)
        body = ("Hello, Python from %s:%d ! You accessed: %s\n" % (HOST, PORT, incoming_url)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    httpd = Server(("", PORT), Handler)
    # SIGTERM: stop accepting, let requests in flight finish, then exit 0.
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=httpd.shutdown).start())
    print("hello-python serving on port %d" % PORT, flush=True)
    httpd.serve_forever()
    httpd.server_close()


if __name__ == "__main__":
    main()
