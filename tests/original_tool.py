"""The original bash forever-slurm's hello-python service, verbatim: its .sub, .py and .yml.

Its users' folders look like this (placeholder servers, a middleware named plain 'retry' in every
service's file, ${FOREVER_ROOT}/freeport.sh); tests check that such folders work unchanged.
"""

ORIGINAL_SUB = """#! /bin/bash
#SBATCH --job-name "hello-python"
#SBATCH --time 0-08:00:00    # 8 hours
#SBATCH --cpus-per-task 1
#SBATCH --mem 1
#SBATCH --output hello-python.out

host=$(hostname)
port=$(${FOREVER_ROOT}/freeport.sh)
scontrol update JobId=${SLURM_JOB_ID} Comment="traefik,${SLURM_JOB_NAME},http://${host}:${port}"

python3 ${FOREVER_ROOT}/.work/hello-python.py ${port}
"""

ORIGINAL_PY = r"""#! /usr/bin/env python3

import sys, http.server, socketserver, socket

HOST = socket.gethostname()
PORT = 22222
if len(sys.argv) > 1:
    PORT = int(sys.argv[1])

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-type', 'text/html')
        self.end_headers()
        incoming_url = f'http://{self.client_address[0]}:{PORT}{self.path}'
        self.wfile.write(f'Hello, Python from {HOST}:{PORT} ! '.encode())
        self.wfile.write(f'You accessed: {incoming_url}\n'.encode())

class ReusableTCPServer(socketserver.TCPServer):
    allow_reuse_address = True

with ReusableTCPServer(("", PORT), Handler) as httpd:
    print(f"hello-python serving on port {PORT}", flush=True)
    httpd.serve_forever()
"""

ORIGINAL_YML = """http:
  routers:
    hello-python-router:
      entryPoints:
        - web
      service: hello-python
      rule: "PathPrefix(`/hello-python`)"
      middlewares:
        - retry
        - strip-hello-python-prefix
  middlewares:
    retry:
      retry:
        attempts: 3
        initialInterval: "500ms"
    strip-hello-python-prefix:
      stripPrefix:
        prefixes:
          - "/hello-python"
  services:
    hello-python:
      loadBalancer:
        healthCheck:
          path: "/test"
          interval: "900s"
          timeout: "1s"
          #status: "401"  # Consider 401 Unauthorized as healthy
        servers:
          - url: "http://xxxxx:12345"
          - url: "http://yyyyy:54321"
"""


def renamed(text, name):
    """The same file for a service called `name` (so it can run beside the bundled hello-python)."""
    return text.replace("hello-python", name)
