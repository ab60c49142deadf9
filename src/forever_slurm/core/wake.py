"""Hold a request for a sleeping service until its first backend is ready, then pass it through.

Why a proxy of our own: a service scaled to 0 instances has no server Traefik could send a request
to, and Traefik's answer for an empty service is a 503 at once. So Traefik routes such a service to
one of these listeners (127.0.0.1 only, one port per service). A request that finds no ready backend
is held: `on_wake(service)` tells the loop to submit now, and the request waits until the loop
publishes a Board listing a ready backend, or `timeout` passes, or the Board says why waiting is
pointless (`refusing`, e.g. sbatch failing: the client gets that reason at once). Then it is forwarded
with `Connection: close`, and the answer is piped back as its bytes come, so an SSE or chunked stream
reaches the client as the backend writes it.

What a client may cost, whatever it does (it may be hostile: any local user can connect):
- No thread: one thread runs every listener and connection with `selectors`; a held request is a
  socket and a few hundred bytes. Host names are resolved by at most RESOLVERS short-lived threads,
  so a slow DNS cannot stall the others.
- Bounded memory (wake_bodies.py): a body stays in memory up to BODY_IN_MEMORY (MEMORY_BUDGET for all),
  larger ones go to a private file in the spool directory (503 past `max_spooled` bytes in all), a
  body over `max_body` is refused (413) before it is read.
- Bounded time: the request line and headers must be complete HEAD_SECONDS after the connection
  (QUICK_HEAD_SECONDS for a client that comes while MAX_READING others of its service are still
  sending), the body must come at BODY_MIN_RATE on average after BODY_GRACE (408 otherwise); held,
  `timeout` (503).
- Fair: each service may have an equal share of `max_connections` (half the file descriptors the
  process may open, FD_RESERVE kept for the loop); while it has its share, its new clients wait in
  its own accept backlog, so they cost nothing and no other service notices. At most `max_held` are
  held (503 past it). Each step of a connection does bounded work before the next one gets its turn.
- Never a reset we can avoid: every refusal is a short answer, after which we read and drop what
  the client still sends for LINGER_SECONDS before closing.
- Never a loop: a backend that resolves to one of our own listeners (`own_ports()`: the wake ports
  and those the loop names, Traefik's) in any spelling is refused (urls.points_at says the same to
  the planner).

The loop's thread never waits on a client: `publish`, `held`, `listen` and `close` take one lock
briefly (close also waits for this thread to let go of the port, which takes one turn of its loop).
Nothing goes to stderr; `log`, if given, gets one line per noteworthy event, at most one per kind and
service every LOG_EVERY seconds.
"""

import errno
import ipaddress
import os
import resource
import selectors
import socket
import ssl
import threading
import time
import traceback
from typing import NamedTuple, Tuple

from ..common import urls
from . import wake_http
from .wake_bodies import Body, Refuse, Spool

CHUNK = 64 * 1024
HEAD_SECONDS = 10.0             # from the connection to the end of the request's headers
QUICK_HEAD_SECONDS = 1.0        # the same for a client that came while MAX_READING others were sending
BODY_GRACE = 10.0               # then the body must have come at BODY_MIN_RATE on average
BODY_MIN_RATE = 16 * 1024
MAX_READING = 64                # clients of one service sending their request slowly at once
LINGER_SECONDS = 1.0            # after an answer, what the client still sends is read and dropped until
LINGER_BYTES = 1024 * 1024      # it pauses this long, or this much beyond the rest of its body has come
CONNECT_TIMEOUT = 5.0
SHUTDOWN_GRACE = 2.0            # streams get this long to end by themselves before close() cuts them
TICK = 0.1                      # deadlines are checked this often
RESOLVERS = 4
DNS_TTL = 30.0
FD_RESERVE = 256                # file descriptors left to the loop (squeue pipes, probes, logs)
LOG_EVERY = 10.0
IDEMPOTENT = frozenset(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])    # RFC 9110 9.2.2


class Held(NamedTuple):
    count: int                      # requests of the service waiting for a backend now
    longest_wait_seconds: float     # how long the oldest of them has waited; 0.0 when none


class Board(NamedTuple):
    """What the loop tells the wake proxy about one service, published whole by the loop's thread and
    read by the proxy's. The rule: replace, never mutate. `publish` swaps in a new Board, so a reader
    sees the old one or the new one, never a mix, and needs no lock to read it."""
    ready_urls: Tuple[str, ...] = ()    # backends taking requests: held requests go there, in turn
    refusing: str = ""                  # why requests should be answered now instead of held (503)
    retry_after: int = 0                # the Retry-After of that answer, seconds; 0: the proxy's own


NO_BOARD = Board()


class WakeProxy:
    """One listener per sleeping service, all served by one thread; see the module docstring."""

    def __init__(self, on_wake, timeout=600.0, retry_after=30, clock=time.monotonic, poll=0.2,
                 max_held=1000, max_body=64 * 1024 * 1024, log=None, spool_dir=None,
                 max_spooled=512 * 1024 * 1024, max_connections=None, also_ours=()):
        self.on_wake = on_wake
        self.timeout = float(timeout)
        self.retry_after = int(retry_after)
        self.clock = clock
        self.poll = float(poll)                 # a backend that refused: try again this much later
        self.max_held = int(max_held)
        self.max_connections = int(max_connections or default_max_connections())
        self.also_ours = frozenset(also_ours)   # ports of ours besides the wake ports (Traefik's)
        self.log = log
        self.spool = Spool(spool_dir, int(max_body), int(max_spooled), self.retry_after)
        self._lock = threading.Lock()
        self._boards = {}           # {service: Board}, replaced whole by publish
        self._services = {}         # {service: _Service} listening now (held() and own_ports() read it)
        self._commands = []         # callables the proxy's thread runs next, under its own turn
        self._thread = None
        self._loop = None           # the _Loop the thread runs
        self._said = {}
        self._dns = _Resolver()
        self._waker = None

    # -- the loop's side ----------------------------------------------------------------------------
    def publish(self, service, board):
        """Replace service's Board (never mutate one: see Board); held requests see it at once."""
        board = board._replace(ready_urls=tuple(board.ready_urls))
        with self._lock:
            self._boards[service] = board
        self._poke()

    def listen(self, service, health_path=None, health_status=None, port=0):
        """Port of service's listener on 127.0.0.1, started if it is not running yet. Traefik's own
        health check of the template (health_path, expecting health_status or 200) is answered here,
        so it does not take the proxy out of the service. port: the one to take if it is free (a
        restarted loop takes back the port Traefik's file still names), else any free one."""
        with self._lock:
            listener = self._services.get(service)
            if listener is not None:
                listener.health = (health_path, health_status or 200)
                return listener.port
            sock = _bound(port)
            listener = _Service(service, sock, (health_path, health_status or 200))
            self._services[service] = listener
            self._commands.append(lambda: self._loop.open(listener))
        self._start()
        return listener.port

    def own_ports(self):
        """Ports a backend URL must never point at on this host: the wake listeners' and `also_ours`."""
        with self._lock:
            return frozenset(s.port for s in self._services.values()) | self.also_ours

    def close(self, service, grace=SHUTDOWN_GRACE):
        """Stop service's listener: its port is free when this returns; held requests get 503, streams
        get `grace` seconds to end, then are cut (by the proxy's thread, after this returns)."""
        with self._lock:
            listener = self._services.pop(service, None)
            if listener is None:
                return
            done = threading.Event()

            def close_it():
                try:
                    self._loop.close(listener, grace)
                finally:
                    done.set()
            self._commands.append(close_it)
        self._poke()
        if not done.wait(5.0):
            self._say("%s: the proxy's thread did not let go of port %d in time" % (service, listener.port))

    def shutdown(self, grace=SHUTDOWN_GRACE):
        """Stop every listener, answer every held request, and end the proxy's thread."""
        with self._lock:
            listeners = list(self._services.values())
            self._services.clear()
            thread = self._thread
            self._commands.append(lambda: self._loop.stop(listeners, grace))
        if thread is None:
            for listener in listeners:
                listener.sock.close()
        else:
            self._poke()
            thread.join(2 * grace + 5.0)
        self._dns.join(grace)
        self.spool.clear()

    def held(self):
        """{service: Held} for every listening service, for status and demand."""
        now = self.clock()
        with self._lock:
            return {name: Held(len(s.waits), max(0.0, now - min(s.waits.values())) if s.waits else 0.0)
                    for name, s in self._services.items()}

    # -- starting and stopping the proxy's thread ---------------------------------------------------
    def _start(self):
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._waker = _Waker()
                self._loop = _Loop(self, self._waker)
                self._thread = threading.Thread(target=self._loop.run, name="wake-proxy")
                self._thread.daemon = True
                self._thread.start()
        self._poke()

    def _poke(self):
        waker = self._waker
        if waker is not None:
            waker.poke()

    def _take_commands(self):
        with self._lock:
            commands, self._commands = self._commands, []
        return commands

    # -- what the proxy's thread asks of the shared state ------------------------------------------
    def board(self, service):
        return self._boards.get(service, NO_BOARD)

    def hold(self, listener, token, since):
        with self._lock:
            listener.waits[token] = since

    def release(self, listener, token):
        with self._lock:
            listener.waits.pop(token, None)

    def wake(self, service):
        try:
            self.on_wake(service)
        except Exception as exc:            # the loop's callback must not stop the proxy
            self._say("%s: on_wake failed: %s" % (service, exc))

    def _say(self, message, kind=None):
        """One line to the log; with kind, at most one per kind every LOG_EVERY s (and how many were not)."""
        if self.log is None:
            return
        if kind is not None:
            now = time.monotonic()
            last, quiet = self._said.get(kind, (None, 0))
            if last is not None and now - last < LOG_EVERY:
                self._said[kind] = (last, quiet + 1)
                return
            self._said[kind] = (now, 0)
            if quiet:
                message += " (and %d more like it in the last %ds)" % (quiet, now - last)
        try:
            self.log("wake " + message)
        except Exception:
            pass


def default_max_connections():
    """Connections of all services at once: half the file descriptors the process may open beyond
    FD_RESERVE (a forwarded request takes two), so clients can never take the loop's last ones."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(32, min(4096, (soft - FD_RESERVE) // 2))


def _bound(port):
    """A listening socket on 127.0.0.1:port, or any free port when port is 0 or taken."""
    for wanted in ([port, 0] if port else [0]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted loop's port back at once
            sock.bind(("127.0.0.1", wanted))
            sock.listen(128)        # 20 clients at once must not meet a full accept backlog
            sock.setblocking(False)
            return sock
        except OSError:
            sock.close()
            if not wanted:
                raise
    raise OSError("no port")        # not reached: the last try is port 0


class _Service:
    """One service's listener and what its clients take now. `waits` is shared with held() (under the
    proxy's lock); everything else belongs to the proxy's thread."""

    def __init__(self, name, sock, health):
        self.name = name
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.health = health        # (path or None, status)
        self.waits = {}             # token -> clock() when the request began to wait
        self.clients = set()        # _Client alive, refused ones lingering included: its share
        self.reading = 0            # of them, still sending their request
        self.accepting = False      # its listener is in the selector
        self.turn = 0               # round-robin position over the ready backends
        self.board = None           # the Board its held requests last saw
        self.closing = False
        self.cut_at = None          # closing: streams still flowing then are cut (time.monotonic)


class _Client:
    """One client connection and its request, through the states of its life: "head", "body" (reading
    the request), "read" (for the moment it takes to route it), "held", "forward" (an _Upstream
    carries it), "answer" (the rest of an answer is being written), "linger" (dropping what the client
    still sends before we close), "closed"."""

    def __init__(self, service, sock, now):
        self.service = service
        self.sock = sock
        self.state = "head"
        self.since = now
        self.deadline = now + HEAD_SECONDS
        self.inbuf = bytearray()
        self.out = bytearray()
        self.head = None
        self.body = None
        self.chunked = None
        self.left = 0               # body bytes still to come (Content-Length)
        self.token = None
        self.give_up_at = None      # once held: the time its 503 is due, whatever happens meanwhile
        self.retry_at = 0.0         # held: when to try the backends again
        self.tries = 0
        self.watching = True        # held or forwarded: a readable socket means the client hung up
        self.resolving = False      # held until a backend's host name is resolved
        self.upstream = None
        self.reading = True         # counted in its service's `reading`
        self.linger_left = 0        # bytes still to read and drop
        self.linger_until = None    # time.monotonic(): a courtesy to the client, not a request's deadline
        self.linger_end = None      # the latest linger_until may be: the rest at BODY_MIN_RATE


class _Upstream:
    """The connection to a backend carrying one client's request: "connect", "tls", "send", "head"
    (waiting for the answer's head), "body" (piping the answer)."""

    def __init__(self, sock, parts, url, deadline, others=()):
        self.sock = sock
        self.parts = parts
        self.url = url
        self.others = others        # [(family, address)] of the same host, tried if this one fails
        self.phase = "connect"
        self.deadline = deadline
        self.want = selectors.EVENT_WRITE
        self.pending = b""          # request bytes not sent yet
        self.reader = None          # the body's bytes still to send
        self.answer = bytearray()   # the answer's head as it comes
        self.left = None            # answer body bytes still to pipe; None: until the backend closes
        self.head_sent = False


class _Loop:
    """The proxy's thread: every socket, every deadline, every state change of a connection."""

    def __init__(self, proxy, waker):
        self.proxy = proxy
        self.waker = waker
        self.selector = selectors.DefaultSelector()
        self.selector.register(waker.reader, selectors.EVENT_READ, ("waker", None))
        self.services = []          # _Service open here, closing ones included
        self.clients = set()
        self.accepting = True
        self.stop_by = None         # shutdown: time.monotonic() by which every connection is closed
        self.next_sweep = 0.0
        self.sweeps = 0             # deadline checks so far (tests wait on it instead of sleeping)
        self.tokens = 0
        self.tls = None
        self.again = set()          # upstreams with TLS bytes already decrypted: select would not say so
        self.dns_answers = 0        # the resolver's count of answers when held requests last looked

    # -- the turn of the loop ----------------------------------------------------------------------
    def run(self):
        try:
            while self.stop_by is None or (self.clients and time.monotonic() < self.stop_by):
                try:
                    self._turn()
                except Exception:       # noqa: a bug in the loop itself must not end the proxy
                    self.proxy._say("bug: %s" % traceback.format_exc().strip().replace("\n", " | "), kind="bug")
                    time.sleep(TICK)
        finally:
            for client in list(self.clients):
                self._drop(client)
            for service in self.services:
                self._unlisten(service)
            self.selector.close()
            self.waker.close()

    def _turn(self):
        """News from the loop's thread, deadlines, then whatever the sockets have for us."""
        for command in self.proxy._take_commands():
            self._guard(command)
        self._boards_changed()
        self._names_resolved()
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + TICK
            self._sweep(self.proxy.clock())
            self.sweeps += 1
        timeout = 0 if self.again else (TICK if self.clients or self.stop_by else None)
        for key, mask in self.selector.select(timeout):
            self._event(key.data, mask)
        for client in list(self.again):
            self.again.discard(client)
            self._guarded(client, lambda c=client: self._from_upstream(c))

    def _event(self, data, mask):
        kind, thing = data
        if kind == "waker":
            self.waker.drain()
        elif kind == "listen":
            self._guard(lambda: self._accept(thing))
        elif kind == "client":
            self._guarded(thing, lambda: self._client_event(thing, mask))
        elif kind == "upstream":
            self._guarded(thing, lambda: self._upstream_event(thing, mask))

    def _guard(self, step):
        try:
            step()
        except Exception:       # noqa: a bug costs one connection, never the proxy
            self.proxy._say("bug: %s" % traceback.format_exc().strip().replace("\n", " | "))

    def _guarded(self, client, step):
        try:
            step()
        except Exception:       # noqa: a bug costs its connection only
            self.proxy._say("%s: bug, connection dropped: %s" % (
                client.service.name, traceback.format_exc().strip().replace("\n", " | ")))
            self._drop(client)

    # -- listeners ---------------------------------------------------------------------------------
    def open(self, service):
        self.services.append(service)
        self._listening(service, True)

    def stop(self, services, grace):
        for service in services:
            self.close(service, grace)
        self.stop_by = time.monotonic() + grace

    def close(self, service, grace):
        """Free service's port now; answer its waiting clients; streams end by themselves or are cut."""
        service.closing = True
        service.cut_at = time.monotonic() + grace
        self._unlisten(service)
        for client in list(service.clients):
            if client.state in ("head", "body", "held") or (client.state == "forward"
                                                           and not client.upstream.head_sent):
                self._answer(client, 503, "the wake proxy is stopping", self.proxy.retry_after)

    def _unlisten(self, service):
        if service.sock.fileno() >= 0:
            self._interest(service.sock, 0, None)
            service.accepting = False
            service.sock.close()

    def _listening(self, service, on):
        """Accept service's clients or not: while it holds its share (or all hold max_connections), new
        ones wait in its own accept backlog, where they cost nothing and reach no other service."""
        on = on and self.accepting and not service.closing and len(service.clients) < self._share()
        if on != service.accepting and service.sock.fileno() >= 0:
            service.accepting = on
            self._interest(service.sock, selectors.EVENT_READ if on else 0, ("listen", service))

    def _share(self):
        """Connections one service may have: an equal part of max_connections, so no service can take
        what another needs (only sleeping MIN-MAX services listen, so they are few)."""
        live = sum(1 for s in self.services if not s.closing) or 1
        return max(1, self.proxy.max_connections // live)

    def _accept(self, service):
        for _ in range(64):         # then the others get their turn
            if len(self.clients) >= self.proxy.max_connections:
                return self._pause_accepting()
            if len(service.clients) >= self._share():
                self.proxy._say("%s: %d connections, its share: new ones wait" % (service.name, len(service.clients)),
                                kind=("share", service.name))
                return self._listening(service, False)
            try:
                sock, _ = service.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:          # EMFILE and the like: the next turn tries again
                self.proxy._say("%s: accept failed: %s" % (service.name, exc), kind=("accept", service.name))
                return
            sock.setblocking(False)
            client = _Client(service, sock, self.proxy.clock())
            self.clients.add(client)
            service.clients.add(client)
            service.reading += 1
            self._guarded(client, lambda: self._read_request(client))   # its request is often there already
            if client.state == "head" and service.reading > MAX_READING:
                client.deadline = client.since + QUICK_HEAD_SECONDS
            self._update(client)

    def _pause_accepting(self):
        if self.accepting:
            self.accepting = False
            self.proxy._say("%d connections in all: accepting again once one ends" % len(self.clients),
                            kind="global cap")
            for service in self.services:
                self._listening(service, False)

    # -- a client's events -------------------------------------------------------------------------
    def _client_event(self, client, mask):
        if mask & selectors.EVENT_WRITE:
            self._flush(client)
        if mask & selectors.EVENT_READ and client.sock.fileno() >= 0 and client in self.clients:
            if client.state in ("head", "body"):
                self._read_request(client)
            elif client.state == "linger":
                self._linger(client)
            else:
                self._watch(client)

    def _read_request(self, client):
        data = _recv(client.sock)
        if data is None:
            return
        if not data:
            return self._drop(client)       # gone while sending: nobody to answer
        client.inbuf += data
        try:
            if client.state == "head":
                self._take_head(client)
            if client.state == "body":
                self._take_body(client)
        except wake_http.BadRequest as exc:
            self._answer(client, exc.status, str(exc))
        except Refuse as exc:
            self._answer(client, exc.status, str(exc), exc.retry)
        except OSError as exc:      # the spool file could not take the body (a full disk)
            self._answer(client, 503, "cannot keep the request body: %s" % (exc.strerror or exc),
                         self.proxy.retry_after)

    def _take_head(self, client):
        end = wake_http.head_end(client.inbuf)
        if end < 0:
            if len(client.inbuf) > wake_http.MAX_HEAD:
                raise wake_http.BadRequest(431, "request head over %d bytes" % wake_http.MAX_HEAD)
            return
        if end > wake_http.MAX_HEAD:
            raise wake_http.BadRequest(431, "request head over %d bytes" % wake_http.MAX_HEAD)
        head = wake_http.parse_head(client.inbuf[:end])
        del client.inbuf[:end]
        client.head = head
        client.left = head.length or 0
        path, status = client.service.health
        if path and head.method in ("GET", "HEAD") and head.target.split("?", 1)[0] == path:
            return self._answer(client, status, "ok\n", quiet=True)
        board = self.proxy.board(client.service.name)
        if board.refusing:      # no point reading a body that will not be forwarded
            raise Refuse(503, board.refusing, board.retry_after or self.proxy.retry_after)
        client.body = Body()
        if head.length:
            self.proxy.spool.reserve(client.body, head.length)
        client.chunked = wake_http.Chunked() if head.chunked else None
        if not head.chunked and not head.length:
            return self._request_read(client)
        client.state = "body"
        client.since = self.proxy.clock()
        if head.expects_continue:
            client.out += wake_http.CONTINUE
            self._flush(client)

    def _take_body(self, client):
        if client.chunked is not None:
            try:
                pieces = client.chunked.feed(client.inbuf)
            except ValueError as exc:
                raise wake_http.BadRequest(400, str(exc))
            for piece in pieces:
                self.proxy.spool.reserve(client.body, client.body.size + len(piece))
                client.body.add(piece)
            done = client.chunked.done
        else:
            piece = bytes(client.inbuf[:client.left])
            del client.inbuf[:len(piece)]
            client.body.add(piece)
            client.left -= len(piece)
            done = not client.left
        if done:
            self._request_read(client)

    def _request_read(self, client):
        self._reading_done(client)
        client.state = "read"
        client.inbuf = bytearray()      # anything after the request is not for us: we close after it
        client.body.finish()
        self._route(client)

    def _watch(self, client):
        """A held or forwarded client's socket is readable: its end (hang up), or bytes we ignore."""
        data = _recv(client.sock)
        if data is None:
            return
        if data:
            client.watching = False         # it sent more: stop watching, or we would spin
            return self._update(client)
        if client.state == "held":
            self.proxy._say("%s: a held client hung up" % client.service.name, kind=("gone", client.service.name))
        else:
            self.proxy._say("%s: the client hung up %s" % (
                client.service.name, "mid-answer" if client.upstream and client.upstream.head_sent
                else "before the answer"), kind=("gone", client.service.name))
        self._drop(client)

    def _linger(self, client):
        """Drop what the client still sends (a body we refused, most often): a client that is still
        sending when we close would get a reset instead of our answer."""
        for _ in range(16):         # then the others get their turn
            data = _recv(client.sock)
            if data is None:
                break
            client.linger_left -= len(data)
            if not data or client.linger_left <= 0:
                return self._drop(client)
        client.linger_until = min(time.monotonic() + LINGER_SECONDS, client.linger_end)

    # -- holding and routing -----------------------------------------------------------------------
    def _route(self, client):
        """Forward to a ready backend, answer the Board's refusal, or hold until one of them comes."""
        board = self.proxy.board(client.service.name)
        if board.refusing:
            return self._answer(client, 503, board.refusing, board.retry_after or self.proxy.retry_after)
        now = self.proxy.clock()
        while board.ready_urls and client.tries < len(board.ready_urls):
            service = client.service
            url = board.ready_urls[service.turn % len(board.ready_urls)]
            service.turn += 1
            client.tries += 1
            started = self._connect(client, url, now)
            if started == "connecting":
                return
            if started == "resolving":
                client.tries -= 1
                client.resolving = True
                break
        client.tries = 0
        self._hold(client, now)

    def _hold(self, client, now):
        service = client.service
        if client.token is None:
            if len(service.waits) >= self.proxy.max_held:
                return self._answer(client, 503, "%d requests are waiting already" % self.proxy.max_held,
                                    self.proxy.retry_after)
            self.tokens += 1
            client.token = self.tokens
            if client.give_up_at is None:       # held again after a backend failed: the same deadline
                client.give_up_at = now + self.proxy.timeout
                self.proxy.wake(service.name)
            self.proxy.hold(service, client.token, now)
        client.state = "held"
        client.retry_at = now + self.proxy.poll
        self._update(client)

    def _boards_changed(self):
        """Held requests of a service whose Board changed go now (forward or refusal)."""
        for service in self.services:
            board = self.proxy.board(service.name)
            if board != service.board:
                service.board = board
                if board.ready_urls or board.refusing:
                    for client in [c for c in service.clients if c.state == "held"]:
                        self._guarded(client, lambda c=client: self._route(c))

    def _names_resolved(self):
        """Held requests that waited for a host name go on once a resolver thread has answered."""
        answers = self.proxy._dns.answers
        if answers != self.dns_answers:
            self.dns_answers = answers
            for client in [c for c in self.clients if c.state == "held" and c.resolving]:
                client.resolving = False
                self._guarded(client, lambda c=client: self._route(c))

    def _sweep(self, now):
        """Every deadline: trickling and silent clients, held too long, silent backends, cut streams."""
        for client in list(self.clients):
            if client in self.clients:
                self._guarded(client, lambda c=client: self._due(c, now))
        self.services = [s for s in self.services if not (s.closing and not s.clients)]

    def _due(self, client, now):
        state, service = client.state, client.service
        if service.closing and time.monotonic() >= service.cut_at:
            return self._drop(client)
        if state == "head" and now >= client.deadline:
            self._answer(client, 408, "request head not complete within %gs" % (client.deadline - client.since))
        elif state == "body" and client.body.size < BODY_MIN_RATE * (now - client.since - BODY_GRACE):
            self._answer(client, 408, "request body slower than %d bytes/s" % BODY_MIN_RATE)
        elif state == "held":
            if now >= client.give_up_at:
                self._answer(client, 503, "no backend ready after %gs" % self.proxy.timeout, self.proxy.retry_after)
            elif now >= client.retry_at and self.proxy.board(service.name).ready_urls:
                self._route(client)
        elif state == "forward" and now >= client.upstream.deadline:
            upstream = client.upstream
            if upstream.phase in ("connect", "tls"):
                self._connect_failed(client, "no connection within %gs" % CONNECT_TIMEOUT)
            elif upstream.head_sent:
                self.proxy._say("%s: %s for %gs mid-answer: cut" % (
                    service.name, "the client read nothing" if client.out else "backend %s silent" % upstream.url,
                    self.proxy.timeout), kind=("silent", service.name))
                self._drop(client)
            else:
                self._answer(client, 502, "backend failed: silent for %gs" % self.proxy.timeout,
                             self.proxy.retry_after)
        elif state == "answer" and now >= client.deadline:
            self._drop(client)
        elif state == "linger" and time.monotonic() >= client.linger_until:
            self._drop(client)

    # -- the backend ---------------------------------------------------------------------------------
    def _connect(self, client, url, now):
        """Start a connection to url for client: "connecting", "resolving" (try again when the name is
        known) or "" (this backend cannot be used now; logged)."""
        service = client.service
        try:
            parts = urls.parse_backend_url(url)
        except ValueError as exc:
            self.proxy._say("%s: backend %s: %s" % (service.name, url, exc), kind=("url", url))
            return ""
        host = parts.host[1:-1] if parts.host.startswith("[") else parts.host
        addresses = self.proxy._dns.addresses(host, self.proxy._poke)
        if addresses is None:
            return "resolving"
        if not addresses:
            self.proxy._say("%s: backend %s: its host name does not resolve" % (service.name, url), kind=("url", url))
            return ""
        if parts.port in self.proxy.own_ports() and any(urls.is_local_address(a) for _, a in addresses):
            self.proxy._say("%s: backend %s points at a listener of ours (port %d): refused" % (
                service.name, url, parts.port), kind=("ours", url))
            return ""
        return "connecting" if self._dial(client, parts, url, addresses) else ""

    def _dial(self, client, parts, url, addresses):
        """Start a non-blocking connection to the first of addresses that takes one; False if none."""
        deadline = self.proxy.clock() + CONNECT_TIMEOUT
        if client.give_up_at is not None:
            deadline = min(deadline, client.give_up_at)
        for number, (family, address) in enumerate(addresses):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((address, parts.port))
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                client.upstream = _Upstream(sock, parts, url, deadline, addresses[number + 1:])
                client.state = "forward"
                client.watching = True
                self._update(client)
                return True
            sock.close()
            self.proxy._say("%s: backend %s (%s): %s" % (client.service.name, url, address, os.strerror(code)),
                            kind=("url", url))
        return False

    def _connect_failed(self, client, why):
        """The backend did not take the request: its host's next address, the next backend, or hold."""
        upstream = client.upstream
        self.proxy._say("%s: backend %s: %s" % (client.service.name, upstream.url, why), kind=("url", upstream.url))
        self._close_upstream(client)
        if not self._dial(client, upstream.parts, upstream.url, upstream.others):
            client.state = "held"
            self._route(client)

    def _upstream_event(self, client, mask):
        upstream = client.upstream
        if upstream is None:
            return
        if upstream.phase == "connect":
            code = upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                return self._connect_failed(client, os.strerror(code))
            self._connected(client)
        elif upstream.phase == "tls":
            self._handshake(client)
        elif upstream.phase == "send":
            self._send_request(client)
        else:
            self._from_upstream(client)

    def _connected(self, client):
        upstream = client.upstream
        if client.token is not None:        # a backend took it: no longer held
            self.proxy.release(client.service, client.token)
            client.token = None
        if upstream.parts.scheme == "https":
            host = upstream.parts.host.strip("[]")
            if self.tls is None:
                self.tls = ssl.create_default_context()
            self._interest(upstream.sock, 0, None)     # the TLS socket takes over the descriptor
            try:
                upstream.sock = self.tls.wrap_socket(upstream.sock, server_hostname=host,
                                                     do_handshake_on_connect=False)
            except (OSError, ValueError) as exc:
                return self._connect_failed(client, "TLS: %s" % exc)
            upstream.phase = "tls"     # its deadline is still the connection's
            return self._handshake(client)
        self._start_sending(client)

    def _handshake(self, client):
        upstream = client.upstream
        try:
            upstream.sock.do_handshake()
        except ssl.SSLWantReadError:
            upstream.want = selectors.EVENT_READ
            return self._update(client)
        except ssl.SSLWantWriteError:
            upstream.want = selectors.EVENT_WRITE
            return self._update(client)
        except (OSError, ValueError) as exc:
            return self._connect_failed(client, "TLS: %s" % exc)
        self._start_sending(client)

    def _start_sending(self, client):
        upstream = client.upstream
        upstream.deadline = self.proxy.clock() + self.proxy.timeout
        upstream.phase = "send"
        upstream.want = selectors.EVENT_WRITE
        upstream.pending = wake_http.request_bytes(client.head, upstream.parts.host, upstream.parts.port,
                                                   client.body.size)
        upstream.reader = client.body.reader(CHUNK)
        self._send_request(client)

    def _send_request(self, client):
        upstream = client.upstream
        for _ in range(16):         # then the others get their turn
            if not upstream.pending:
                upstream.pending = next(upstream.reader, b"")
                if not upstream.pending:
                    upstream.phase = "head"
                    upstream.want = selectors.EVENT_READ
                    upstream.reader = None
                    return self._update(client)
            try:
                sent = upstream.sock.send(upstream.pending)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                break
            except ssl.SSLWantReadError:
                upstream.want = selectors.EVENT_READ
                return self._update(client)
            except OSError as exc:       # it never had the whole request: another try is safe
                return self._connect_failed(client, "failed while taking the request: %s" % exc)
            upstream.pending = upstream.pending[sent:]
            upstream.deadline = self.proxy.clock() + self.proxy.timeout
        upstream.want = selectors.EVENT_WRITE
        self._update(client)

    def _from_upstream(self, client):
        """Bytes of the answer, as the client takes them: never more than CHUNK waiting for it."""
        upstream = client.upstream
        if upstream is None or upstream.phase not in ("head", "body"):
            return
        while len(client.out) < CHUNK and client.upstream is upstream:
            try:
                data = upstream.sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                if upstream.phase == "head" and not upstream.answer and client.head.method in IDEMPOTENT \
                        and isinstance(exc, ConnectionError):
                    # A reset before any answer: most often a full accept queue (llama.cpp's is 5), so
                    # the request was never read; a method that may be repeated is, as nginx does.
                    return self._connect_failed(client, "reset before answering: %s" % exc)
                return self._upstream_failed(client, str(exc) or type(exc).__name__)
            if not data:
                return self._upstream_ended(client)
            upstream.deadline = self.proxy.clock() + self.proxy.timeout
            if upstream.phase == "head":
                upstream.answer += data
                self._take_answer_head(client)
            else:
                self._pipe(client, data)
        if client in self.clients:
            self._flush(client)

    def _more_decrypted(self, client):
        """TLS bytes already decrypted are not seen by select: the next turn reads them."""
        upstream = client.upstream
        pending = getattr(upstream.sock, "pending", None) if upstream is not None else None
        if pending is not None and upstream.phase in ("head", "body") and len(client.out) < CHUNK and pending():
            self.again.add(client)

    def _take_answer_head(self, client):
        """Move complete answer heads to the client (1xx ones, then the final one and what follows it)."""
        upstream = client.upstream
        while upstream.phase == "head":
            end = wake_http.answer_head_end(upstream.answer)
            if end < 0:
                if len(upstream.answer) > wake_http.MAX_HEAD:
                    self._upstream_failed(client, "answer head over %d bytes" % wake_http.MAX_HEAD)
                return
            try:
                status, head, length = wake_http.rewrite_answer_head(upstream.answer[:end], client.head.method)
            except ValueError as exc:
                return self._upstream_failed(client, str(exc))
            rest = bytes(upstream.answer[end:])
            upstream.answer = bytearray(rest)
            client.out += head
            upstream.head_sent = True
            if not (100 <= status < 200 and status != 101):
                upstream.phase = "body"
                upstream.left = length
                upstream.answer = bytearray()
                self._forget_body(client)       # answered: it will not be sent again
                if rest or length == 0:
                    self._pipe(client, rest)

    def _pipe(self, client, data):
        upstream = client.upstream
        if upstream.left is not None:
            data = data[:upstream.left]
            upstream.left -= len(data)
        client.out += data
        if upstream.left == 0:
            self._close_upstream(client)
            self._finish(client)

    def _upstream_ended(self, client):
        upstream = client.upstream
        if upstream.phase == "head":
            return self._upstream_failed(client, "closed the connection before answering")
        if upstream.left:
            self.proxy._say("%s: backend %s ended %d bytes short" % (client.service.name, upstream.url, upstream.left),
                            kind=("short", client.service.name))
        self._close_upstream(client)
        self._finish(client)
        self._flush(client)

    def _upstream_failed(self, client, why):
        if client.upstream.head_sent:
            self.proxy._say("%s: backend failed mid-answer: %s" % (client.service.name, why),
                            kind=("failed", client.service.name))
            self._close_upstream(client)
            self._finish(client)
            return self._flush(client)
        self._answer(client, 502, "backend failed: %s" % why, self.proxy.retry_after)

    def _close_upstream(self, client):
        upstream = client.upstream
        if upstream is not None:
            client.upstream = None
            self.again.discard(client)
            self._interest(upstream.sock, 0, None)
            _close(upstream.sock)

    # -- answering the client ------------------------------------------------------------------------
    def _answer(self, client, status, why, retry=None, quiet=False):
        """Our own short answer (health, refusal, failure); then linger and close."""
        service = client.service
        self._reading_done(client)
        self._release(client)
        self._close_upstream(client)
        text = why if quiet else "%s%s\n" % (why, "; retry in %ds" % retry if retry else "")
        headers = [("Retry-After", str(retry))] if retry else []
        head_only = client.head is not None and client.head.method == "HEAD"
        client.out = bytearray(wake_http.reply_bytes(status, text, headers, head_only))
        if not quiet:
            self.proxy._say("%s: %d, %s" % (service.name, status, why), kind=(status, service.name))
        self._finish(client, HEAD_SECONDS)
        self._flush(client)

    def _finish(self, client, seconds=None):
        """The answer is complete once `out` is sent (within `seconds`, else the timeout): then linger."""
        client.state = "answer"
        client.deadline = self.proxy.clock() + (self.proxy.timeout if seconds is None else seconds)
        self._forget_body(client)
        self._update(client)

    def _forget_body(self, client):
        """Its memory or spool file is free once the backend has answered (until then a retry needs it)."""
        if client.body is not None:
            client.body.discard(self.proxy.spool)
            client.body = None

    def _flush(self, client):
        if client.out:
            try:
                sent = client.sock.send(client.out)
                del client.out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                if client.upstream is not None:
                    self.proxy._say("%s: the client hung up mid-answer" % client.service.name,
                                    kind=("gone", client.service.name))
                return self._drop(client)
        self._more_decrypted(client)
        if not client.out and client.state == "answer":
            client.state = "linger"
            unread = client.left if client.head is not None and not client.head.chunked else 0
            client.linger_left = LINGER_BYTES + min(unread, self.proxy.spool.max_body)
            now = time.monotonic()
            client.linger_until = now + LINGER_SECONDS
            client.linger_end = client.linger_until + client.linger_left / BODY_MIN_RATE
            try:
                client.sock.shutdown(socket.SHUT_WR)
            except OSError:
                return self._drop(client)
        self._update(client)

    def _reading_done(self, client):
        if client.reading:
            client.reading = False
            client.service.reading -= 1

    def _release(self, client):
        if client.token is not None:
            self.proxy.release(client.service, client.token)
            client.token = None

    def _drop(self, client):
        """Close client (and its backend connection, so the backend can stop work) and free all it took."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        service = client.service
        service.clients.discard(client)
        self._reading_done(client)
        client.state = "closed"
        self._release(client)
        self._close_upstream(client)
        self._forget_body(client)
        self._interest(client.sock, 0, None)
        _close(client.sock)
        if not self.accepting and len(self.clients) < self.proxy.max_connections:
            self.accepting = True
            for other in self.services:
                self._listening(other, True)
        else:
            self._listening(service, True)      # below its share again: its backlog goes on

    # -- selector interest ---------------------------------------------------------------------------
    def _update(self, client):
        if client not in self.clients:
            return
        read = selectors.EVENT_READ
        write = selectors.EVENT_WRITE if client.out else 0
        state = client.state
        if state in ("head", "body", "linger"):
            events = read | write
        elif state in ("held", "forward"):
            events = (read if client.watching else 0) | write
        else:
            events = write
        self._interest(client.sock, events, ("client", client))
        upstream = client.upstream
        if upstream is not None:
            want = upstream.want
            if upstream.phase in ("head", "body"):
                want = read if len(client.out) < CHUNK else 0
            self._interest(upstream.sock, want, ("upstream", client))

    def _interest(self, sock, events, data):
        try:
            key = self.selector.get_key(sock)
        except (KeyError, ValueError):
            if events:
                self.selector.register(sock, events, data)
            return
        if not events:
            self.selector.unregister(sock)
        elif key.events != events or key.data is not data:
            self.selector.modify(sock, events, data)


class _Resolver:
    """Addresses of backend host names, looked up by short-lived threads (at most RESOLVERS at once)
    and kept DNS_TTL seconds, so a slow DNS delays only the requests that need that name."""

    def __init__(self):
        self._lock = threading.Lock()
        self._known = {}            # host -> (until, [(family, address)])
        self._asking = {}           # host -> thread
        self.answers = 0            # answers so far: a change tells the proxy's thread to look

    def addresses(self, host, done):
        """[(family, address)] of host; [] when it does not resolve; None while a thread asks (done()
        is called when it knows)."""
        try:
            ip = ipaddress.ip_address(host)
            return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, host)]
        except ValueError:
            pass
        with self._lock:
            known = self._known.get(host)
            if known is not None and known[0] > time.monotonic():
                return known[1]
            if host in self._asking or len(self._asking) >= RESOLVERS:
                return None
            thread = threading.Thread(target=self._ask, args=(host, done), name="wake-resolve")
            thread.daemon = True
            self._asking[host] = thread
        thread.start()
        return None

    def _ask(self, host, done):
        try:
            found = [(info[0], info[4][0]) for info in socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
                     if info[0] in (socket.AF_INET, socket.AF_INET6)]
        except (OSError, UnicodeError):
            found = []
        with self._lock:
            self._known[host] = (time.monotonic() + DNS_TTL, found)
            del self._asking[host]
            self.answers += 1
        done()

    def join(self, seconds):
        with self._lock:
            threads = list(self._asking.values())
        deadline = time.monotonic() + seconds
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Waker:
    """A socket pair that ends the proxy thread's select() when another thread has news for it."""

    def __init__(self):
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def poke(self):
        try:
            self.writer.send(b"x")
        except OSError:         # full (news is pending anyway) or closed (the thread has ended)
            pass

    def drain(self):
        try:
            while self.reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        self.reader.close()
        self.writer.close()


def _close(sock):
    try:
        sock.close()
    except OSError:
        pass


def _recv(sock):
    """A client's next bytes: None when there are none yet, b"" at its end (or its reset)."""
    try:
        return sock.recv(CHUNK)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
