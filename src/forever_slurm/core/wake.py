"""Hold a request for a sleeping service until its first backend is ready, then pass it through.

Why a proxy of our own: a service scaled to 0 instances has no server Traefik could send a request
to, and Traefik's answer for an empty service is a 503 at once. So Traefik routes such a service to
one of these listeners (127.0.0.1 only, one port per service). A request that finds no ready backend
is held: `on_wake(service)` tells the loop to submit now, and the request thread polls
`backends_for(service)` until a backend is listed or `timeout` passes. Then it is forwarded with
`Connection: close`, and the answer is piped back as bytes as they come (64 KiB reads, each written
at once), so an SSE or chunked stream reaches the client as the backend writes it. A client never
sees a reset connection from us: on timeout, too many held requests or a backend that fails before
answering it gets a short 503 (or 502) with Retry-After. A client that hangs up is noticed while held
and while its answer streams, and its backend connection is closed so the backend can stop work.
Nothing goes to stderr; `log`, if given, gets one line per noteworthy event.
"""

import select
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import NamedTuple
from urllib.parse import urlsplit

from ..common import urls, validate

CHUNK = 64 * 1024
MAX_HEAD = 64 * 1024            # a backend's status line and headers; longer is not an answer we pass on
REQUEST_READ_TIMEOUT = 60.0     # a client gets this long for each read of its request line, headers, body
CONNECT_TIMEOUT = 5.0
SHUTDOWN_GRACE = 2.0            # streams get this long to end by themselves before close() cuts them
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are not forwarded; every Proxy-*
# header is dropped too. Host, Content-Length and Expect are written anew: the body is already read.
HOP_BY_HOP = frozenset(["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"])
REWRITTEN = frozenset(["host", "content-length", "expect"])
RESPONSE_HOP_BY_HOP = frozenset([b"connection", b"keep-alive", b"proxy-connection"])


class Held(NamedTuple):
    count: int                      # requests of the service waiting for a backend now
    longest_wait_seconds: float     # how long the oldest of them has waited; 0.0 when none


class Request(NamedTuple):
    method: str
    target: str                     # path and query
    headers: list                   # [(name, value)] to forward, in the client's order
    body: bytes
    framed: bool                    # the client sent a body (length or chunks), even an empty one


class WakeProxy:
    """One listener per sleeping service; see the module docstring for the path a request takes."""

    def __init__(self, on_wake, backends_for, timeout=600.0, retry_after=30, clock=time.monotonic,
                 poll=0.2, max_held=1000, max_body=64 * 1024 * 1024, log=None):
        self.on_wake = on_wake
        self.backends_for = backends_for
        self.timeout = float(timeout)
        self.retry_after = int(retry_after)
        self.clock = clock
        self.poll = float(poll)
        self.max_held = int(max_held)
        self.max_body = int(max_body)
        self.log = log
        self._lock = threading.Lock()
        self._listeners = {}
        self._tokens = 0

    # -- the loop's side ----------------------------------------------------------------------------
    def listen(self, service, health_path=None, health_status=None, port=0):
        """Port of service's listener on 127.0.0.1, started if it is not running yet. Traefik's own
        health check of the template (health_path, expecting health_status or 200) is answered here,
        so it does not take the proxy out of the service. port: the one to take if it is free (a
        restarted loop takes back the port Traefik's file still names), else any free one."""
        with self._lock:
            listener = self._listeners.get(service)
            if listener is not None:
                listener.health_path = health_path
                listener.health_status = health_status or 200
                return listener.port
            server = _bound(self, service, port)
            listener = _Listener(service, server, health_path)
            listener.health_status = health_status or 200
            server.listener = listener
            self._listeners[service] = listener
        listener.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                           name="wake-listen-%s" % service)
        listener.thread.daemon = True
        listener.thread.start()
        return listener.port

    def port(self, service):
        with self._lock:
            listener = self._listeners.get(service)
        return listener.port if listener is not None else None

    def close(self, service, grace=SHUTDOWN_GRACE):
        """Stop service's listener: held requests get 503, streams get `grace` seconds, then are cut."""
        with self._lock:
            listener = self._listeners.pop(service, None)
        if listener is not None:
            self._stop(listener, grace)

    def shutdown(self, grace=SHUTDOWN_GRACE):
        """Stop every listener and join its threads."""
        with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
        for listener in listeners:
            listener.stopped.set()          # every service's held requests answer at once, in parallel
        for listener in listeners:
            self._stop(listener, grace)

    def held(self):
        """{service: Held} for every listening service, for status."""
        now = self.clock()
        with self._lock:
            return {service: Held(len(listener.waits),
                                  max(0.0, now - min(listener.waits.values())) if listener.waits else 0.0)
                    for service, listener in self._listeners.items()}

    def _stop(self, listener, grace):
        listener.stopped.set()
        listener.server.shutdown()
        listener.server.server_close()
        listener.thread.join(grace)
        if not _join_all(listener.threads_now(self._lock), grace):
            with self._lock:
                upstreams = list(listener.upstreams)
            for sock in upstreams:          # a stream still flowing after the grace: cut it
                _shut(sock)
            _join_all(listener.threads_now(self._lock), grace)

    # -- one request, in its own thread -------------------------------------------------------------
    def serve(self, listener, handler):
        """Answer one request: health, forward at once, or hold until a backend is ready."""
        if listener.health_path and handler.command in ("GET", "HEAD") \
                and _target(handler.path).split("?", 1)[0] == listener.health_path:
            return _reply(handler, listener.health_status, "ok\n")
        try:
            request = _read_request(handler, self.max_body)
        except _TooLarge:
            _reply(handler, 413, "request body over %d bytes\n" % self.max_body)
            return _drain(handler.connection)
        except ValueError as exc:
            return _reply(handler, 400, "%s\n" % exc)
        except OSError:
            return None                     # the client went away while sending: nobody to answer
        deadline = self.clock() + self.timeout
        why, token = None, None
        try:
            while why is None:
                backends = self._ready(listener.service)
                upstream = self._connect(listener, backends, deadline) if backends else None
                if upstream is not None:
                    self._release(listener, token)
                    token = None
                    return self._forward(listener, handler, request, upstream)
                if token is None:
                    token = self._hold(listener)
                    if token is None:
                        why = "%d requests are waiting already" % self.max_held
                        break
                    self._wake(listener.service)
                outcome = self._pause(listener, handler, deadline)
                if outcome == "gone":
                    return self._say("%s: a held client hung up" % listener.service)
                why = {"timeout": "no backend ready after %gs" % self.timeout,
                       "stopped": "the wake proxy is stopping"}.get(outcome)
        finally:
            self._release(listener, token)      # before the answer: held() never counts an answered one
        return self._unavailable(handler, why)

    def _ready(self, service):
        try:
            return list(self.backends_for(service) or ())
        except Exception as exc:            # the loop's callback must not kill a request thread
            self._say("%s: backends_for failed: %s" % (service, exc))
            return []

    def _wake(self, service):
        try:
            self.on_wake(service)
        except Exception as exc:
            self._say("%s: on_wake failed: %s" % (service, exc))

    def _hold(self, listener):
        """A token counting this request as held; None when max_held are held already."""
        with self._lock:
            if len(listener.waits) >= self.max_held:
                return None
            self._tokens += 1
            listener.waits[self._tokens] = self.clock()
            return self._tokens

    def _release(self, listener, token):
        if token is not None:
            with self._lock:
                listener.waits.pop(token, None)

    def _pause(self, listener, handler, deadline):
        """Wait one poll: "go" to look again, or why to stop waiting ("gone", "timeout", "stopped")."""
        if listener.stopped.is_set():
            return "stopped"
        remaining = deadline - self.clock()
        if remaining <= 0:
            return "timeout"
        if _hung_up(handler.connection):
            return "gone"
        return "stopped" if listener.stopped.wait(min(self.poll, remaining)) else "go"

    def _connect(self, listener, backends, deadline):
        """An open socket to one of backends, taken in turn; None when none accepts."""
        with self._lock:
            first = listener.turn
            listener.turn += 1
        for step in range(len(backends)):
            url = backends[(first + step) % len(backends)]
            try:
                parts = urls.parse_backend_url(url)
                return _open(parts, min(CONNECT_TIMEOUT, max(0.1, deadline - self.clock())))
            except (ValueError, OSError) as exc:
                self._say("%s: backend %s: %s" % (listener.service, url, exc))
        return None

    def _forward(self, listener, handler, request, upstream):
        sock, parts = upstream
        with self._lock:
            listener.upstreams.add(sock)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.sendall(_request_bytes(request, parts))
            except OSError as exc:
                return self._unavailable(handler, "backend failed: %s" % exc, status=502)
            handler.connection.settimeout(self.timeout)
            try:
                outcome = _relay(_Pipe(sock, handler.connection, self.timeout), request.method)
            except _UpstreamError as exc:
                return self._unavailable(handler, "backend failed: %s" % exc, status=502)
            if outcome:
                self._say("%s: %s" % (listener.service, outcome))
        finally:
            with self._lock:
                listener.upstreams.discard(sock)
            _shut(sock)
            sock.close()

    def _unavailable(self, handler, why, status=503):
        self._say("%s: %d, %s" % (handler.server.listener.service, status, why))
        _reply(handler, status, "%s; retry in %ds\n" % (why, self.retry_after),
               [("Retry-After", str(self.retry_after))])

    def _say(self, message):
        if self.log is not None:
            try:
                self.log("wake " + message)
            except Exception:
                pass


class _Listener:
    """One service's server, its threads, and the requests it holds now (under the proxy's lock)."""

    def __init__(self, service, server, health_path):
        self.service = service
        self.server = server
        self.port = server.server_address[1]
        self.health_path = health_path
        self.health_status = 200
        self.thread = None
        self.threads = set()        # request threads alive
        self.waits = {}             # token -> clock() when it began to wait
        self.upstreams = set()      # sockets to backends with an answer flowing
        self.turn = 0               # round-robin position over the backends
        self.stopped = threading.Event()

    def threads_now(self, lock):
        with lock:
            return list(self.threads)


def _bound(proxy, service, port):
    if port:
        try:
            return _Server(proxy, service, port)
        except OSError:
            pass            # taken by now: any free port, and the loop rewrites Traefik's file
    return _Server(proxy, service)


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    """HTTPServer on a free 127.0.0.1 port; request threads are daemons, counted so close() can join them."""

    daemon_threads = True
    request_queue_size = 128        # 20 clients at once must not meet a full accept backlog

    allow_reuse_address = True      # a restarted loop takes its port back at once (TIME_WAIT)

    def __init__(self, proxy, service, port=0):
        self.proxy = proxy
        self.service = service
        self.listener = None
        HTTPServer.__init__(self, ("127.0.0.1", port), _Handler)

    def server_bind(self):
        # HTTPServer's own looks up the host's FQDN, which can take seconds where DNS is slow.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        thread = threading.Thread(target=self._one, args=(request, client_address),
                                  name="wake-%s" % self.service)
        thread.daemon = True
        with self.proxy._lock:
            self.listener.threads.add(thread)
        try:
            thread.start()
        except RuntimeError:
            with self.proxy._lock:
                self.listener.threads.discard(thread)
            raise

    def _one(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.proxy._lock:
                self.listener.threads.discard(threading.current_thread())

    def handle_error(self, request, client_address):
        """One line to the log instead of a traceback on stderr (a client hanging up is no news)."""
        exc = sys.exc_info()[1]
        self.proxy._say("%s: request from %s ended: %s: %s"
                        % (self.service, client_address[0], type(exc).__name__, exc))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # so a client that sends Expect: 100-continue is answered
    server_version = "forever-slurm-wake"
    timeout = REQUEST_READ_TIMEOUT

    def _serve(self):
        self.close_connection = True
        self.server.proxy.serve(self.server.listener, self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, format, *args):
        self.server.proxy._say("%s: %s" % (self.server.service, format % args))


class _TooLarge(Exception):
    pass


class _UpstreamError(Exception):
    """The backend failed before its answer's head reached the client: we may still answer 502."""


def _read_request(handler, max_body):
    """The Request to forward; ValueError for a malformed body, _TooLarge, OSError if the client left."""
    headers = handler.headers
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _request_of(handler, _read_chunked(handler.rfile, max_body), True)
    length = headers.get("Content-Length")
    if length is None:
        return _request_of(handler, b"", False)
    length = length.strip()
    if not validate.ascii_digits(length):
        raise ValueError("bad Content-Length")
    if int(length) > max_body:
        raise _TooLarge()
    body = handler.rfile.read(int(length))
    if len(body) < int(length):
        raise ConnectionError("body cut short")
    return _request_of(handler, body, True)


def _request_of(handler, body, framed):
    return Request(handler.command, _target(handler.path), _forwarded_headers(handler.headers), body, framed)


def _read_chunked(rfile, max_body):
    """The body of a chunked request, its chunk extensions and trailers dropped."""
    parts, size = [], 0
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise ConnectionError("chunked body cut short")
        digits = line.split(b";", 1)[0].strip()
        try:
            length = int(digits, 16)
        except ValueError:
            raise ValueError("bad chunk size")
        if length < 0:
            raise ValueError("bad chunk size")
        if length == 0:
            break
        size += length
        if size > max_body:
            raise _TooLarge()
        data = rfile.read(length)
        if len(data) < length or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise ConnectionError("chunk cut short")
        parts.append(data)
    for _ in range(100):                    # trailers end at an empty line
        line = rfile.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            break
    return b"".join(parts)


def _target(path):
    """Path and query of a request target, also when a client sent the absolute form."""
    if "://" in path.split("?", 1)[0]:
        parts = urlsplit(path)
        return (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return path


def _forwarded_headers(message):
    """[(name, value)] of the client's headers minus hop-by-hop ones and those named in Connection."""
    named = set(token.strip().lower() for value in message.get_all("Connection", [])
                for token in value.split(","))
    kept = []
    for name, value in message.items():
        key = name.lower()
        if key in HOP_BY_HOP or key in REWRITTEN or key in named or key.startswith("proxy-"):
            continue
        kept.append((name, value.replace("\r", " ").replace("\n", " ")))
    return kept


def _request_bytes(request, parts):
    lines = ["%s %s HTTP/1.1" % (request.method, request.target), "Host: %s:%d" % (parts.host, parts.port)]
    lines.extend("%s: %s" % header for header in request.headers)
    if request.framed or request.body:
        lines.append("Content-Length: %d" % len(request.body))
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + request.body


def _open(parts, timeout):
    """(socket, parts) connected to the backend, TLS for https; OSError when it does not accept."""
    host = parts.host[1:-1] if parts.host.startswith("[") else parts.host
    sock = socket.create_connection((host, parts.port), timeout=timeout)
    if parts.scheme == "https":
        try:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except (OSError, ValueError) as exc:
            sock.close()
            raise OSError("TLS: %s" % exc)
    return sock, parts


class _Pipe:
    """A backend's socket and its client's; recv() waits for the backend while watching the client."""

    def __init__(self, upstream, client, idle):
        self.upstream = upstream
        self.client = client
        self.idle = idle
        self.watch_client = True

    def recv(self, size):
        """Next bytes from the backend (b"" at its end); None once the client has hung up."""
        while True:
            pending = getattr(self.upstream, "pending", None)
            if pending is not None and pending():       # TLS bytes decrypted already: poll would not see them
                return self.upstream.recv(size)
            watched = [self.upstream, self.client] if self.watch_client else [self.upstream]
            readable = _readable(watched, self.idle)
            if not readable:
                raise socket.timeout("backend silent for %gs" % self.idle)
            if self.upstream in readable:
                return self.upstream.recv(size)
            if _hung_up(self.client):
                return None
            self.watch_client = False       # the client sent more bytes: stop watching, or we would spin


def _relay(pipe, method):
    """Pipe the backend's answer to the client as it comes; returns why it stopped early, or ""."""
    buffered = b""
    while True:
        head, buffered = _read_head(pipe, buffered)
        if head is None:
            return "the client hung up before the answer"
        status, head, length = _rewrite_head(head, method)
        if not _send(pipe.client, head):
            return "the client hung up"
        if not (100 <= status < 200 and status != 101):
            break
    return _copy_body(pipe, buffered, length)


def _read_head(pipe, buffered):
    """(head up to its blank line, the bytes after it); head None when the client hung up."""
    while b"\r\n\r\n" not in buffered:
        if len(buffered) > MAX_HEAD:
            raise _UpstreamError("answer head over %d bytes" % MAX_HEAD)
        try:
            chunk = pipe.recv(CHUNK)
        except OSError as exc:
            raise _UpstreamError(str(exc) or type(exc).__name__)
        if chunk is None:
            return None, b""
        if not chunk:
            raise _UpstreamError("closed the connection before answering")
        buffered += chunk
    end = buffered.index(b"\r\n\r\n") + 4
    return buffered[:end], buffered[end:]


def _rewrite_head(head, method):
    """(status, head to send, body length or None for "until the backend closes").

    The head passes as it came but for its connection headers: ours to the client says
    `Connection: close`, so the client does not reuse a connection we are about to close.
    """
    lines = head[:-4].split(b"\r\n")
    fields = lines[0].split(None, 2)
    if len(fields) < 2 or not lines[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise _UpstreamError("answered something that is not HTTP")
    status = int(fields[1])
    if 100 <= status < 200 and status != 101:
        return status, head, 0
    kept, length, chunked = [lines[0]], None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key in RESPONSE_HOP_BY_HOP:
            continue
        if key == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
        if key == b"transfer-encoding":
            chunked = True
        kept.append(line)
    kept.append(b"Connection: close")
    if method == "HEAD" or status in (204, 304):
        length = 0
    elif chunked:
        length = None
    return status, b"\r\n".join(kept) + b"\r\n\r\n", length


def _copy_body(pipe, buffered, length):
    """Copy the body (length bytes, or up to the backend's end); returns why it stopped early, or ""."""
    if buffered:
        first = buffered if length is None else buffered[:length]
        if not _send(pipe.client, first):
            return "the client hung up mid-answer"
        length = None if length is None else length - len(first)
    while length is None or length > 0:
        try:
            chunk = pipe.recv(CHUNK if length is None else min(CHUNK, length))
        except OSError as exc:
            return "backend failed mid-answer: %s" % (str(exc) or type(exc).__name__)
        if chunk is None:
            return "the client hung up mid-answer"
        if not chunk:
            return "" if length is None else "backend ended %d bytes short" % length
        if not _send(pipe.client, chunk):
            return "the client hung up mid-answer"
        if length is not None:
            length -= len(chunk)
    return ""


def _send(sock, data):
    """False when the client is gone."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _reply(handler, status, text, headers=()):
    """A short text answer of our own; a client that left meanwhile is not an error."""
    body = text.encode("utf-8")
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        pass


def _readable(socks, timeout):
    """Those of socks with bytes or an end to read within timeout seconds (poll takes any fd number)."""
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        by_fd[sock.fileno()] = sock
        poller.register(sock, select.POLLIN | select.POLLPRI)
    return [by_fd[fd] for fd, _ in poller.poll(max(0, int(timeout * 1000)))]


def _hung_up(sock):
    """True when the peer has closed its side (or reset it); no waiting."""
    try:
        if not _readable([sock], 0):
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _drain(sock, seconds=1.0, limit=1024 * 1024):
    """Read and drop what the client still sends, briefly: closing on unread bytes would reset it."""
    deadline = time.monotonic() + seconds
    try:
        sock.shutdown(socket.SHUT_WR)
        while limit > 0 and time.monotonic() < deadline:
            if not _readable([sock], deadline - time.monotonic()):
                break
            data = sock.recv(min(CHUNK, limit))
            if not data:
                break
            limit -= len(data)
    except OSError:
        pass


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _join_all(threads, seconds):
    """Join threads within seconds in all; True when every one ended."""
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)
