"""HTTP GETs to many servers at once, each within an overall deadline: one thread, one selector.

A server may answer at once, slowly, a byte at a time, never, or with a head of any size: each GET
costs one socket for at most its own deadline and at most MAX_HEAD bytes, and a batch ends by its
deadline whatever the servers do. Only a complete answer head (status line and headers, up to the
blank line) counts as an answer: a status line followed by a trickle is no answer. Sockets are
bounded (max_open) and shared fairly: the GETs of one group (a service) never hold more than their
share while others wait. Host names are resolved by a few daemon threads (getaddrinfo cannot be
interrupted, so a name whose DNS never answers costs one thread, never the batch), with answers
kept a little while and a stale one used while a fresh one is late.
"""

import collections
import errno
import ipaddress
import os
import re
import selectors
import socket
import threading
import time
from typing import NamedTuple, Optional

MAX_HEAD = 64 * 1024        # an answer head larger than this is no answer
MAX_OPEN = 256              # sockets open at once (fewer when the file descriptor limit is low)
USER_AGENT = "forever-slurm-probe"

_STATUS_RE = re.compile(br"^HTTP/[0-9]\.[0-9] ([1-9][0-9][0-9])(?:[ \t]|\r?$)")
_HEAD_END_RE = re.compile(br"\r?\n\r?\n")


class Get(NamedTuple):
    """One GET. path None: only connect (is anything listening?)."""
    host: str               # a name or an IP address, without brackets
    port: int
    path: Optional[str] = "/"
    tls: bool = False
    group: object = None    # GETs of one group share their part of the sockets (None: the host)
    body_bytes: int = 0     # also wait for this much of the body (or its end), within the deadline


class Answer(NamedTuple):
    status: Optional[int]   # the status of a complete answer head (0: connected, for a connect-only Get)
    detail: str = ""        # why there is no status
    refused: bool = False   # the connection was refused: nobody listens there
    body: bytes = b""       # the start of the body: up to Get.body_bytes (for messages)
    connected: bool = False  # a TCP connection was made (what failed came after it)


def fetch_all(gets, timeout, deadline=None, admit=None, resolver=None, max_open=None, clock=time.monotonic):
    """{key: Answer} for {key: Get}, each GET within `timeout` seconds of its start, the whole by
    `deadline` (a clock() time; default: 3 timeouts from now). GETs the deadline leaves no time to
    start get no Answer: the caller may try them first next time.

    admit(addresses, port) -> "" or why not: a name's addresses are checked before any connection to them."""
    now = clock()
    deadline = now + 3 * timeout if deadline is None else deadline
    batch = _Batch(gets, timeout, deadline, admit, resolver or RESOLVER, max_open or _max_open(), clock)
    return batch.run()


class _Conn:
    """One GET in flight: its socket, its stage and what it has read so far."""
    __slots__ = ("key", "get", "addresses", "sock", "stage", "deadline", "out", "head", "error", "refused",
                 "answer")

    def __init__(self, key, get, addresses, deadline):
        self.key, self.get, self.addresses, self.deadline = key, get, list(addresses), deadline
        self.sock, self.stage, self.out, self.head = None, "connect", b"", bytearray()
        self.error, self.refused = "", False
        self.answer = None      # the answer, once its head is complete, while some body is awaited


class _Batch:
    """The state of one fetch_all call."""

    def __init__(self, gets, timeout, deadline, admit, resolver, max_open, clock):
        self.timeout, self.deadline, self.admit, self.resolver = timeout, deadline, admit, resolver
        self.max_open, self.clock = max_open, clock
        self.answers = {}
        self.waiting = collections.OrderedDict()    # key -> Get whose name is being resolved
        self.ready = {}                             # group -> deque of (key, Get, addresses) to start
        self.turns = collections.deque()            # groups with GETs to start, the next first
        self.open = collections.Counter()           # group -> its connections in flight
        self.active = 0                             # groups with GETs to start or in flight
        self.selector = selectors.DefaultSelector()
        self.conns = set()
        for key, get in gets.items():
            addresses = _literal(get.host, get.port)
            if addresses is not None:
                self._admit(key, get, addresses)
            else:
                resolver.want(get.host)
                self.waiting[key] = get

    def run(self):
        try:
            while True:
                now = self.clock()
                self._expire(now)
                self._resolved(now)
                self._start(now)
                if now >= self.deadline or not (self.waiting or self.conns or self.turns):
                    break
                if not self.conns and not self.waiting and now + self.timeout > self.deadline:
                    break       # what is left cannot start before the deadline
                wait = min([c.deadline for c in self.conns] + [self.deadline]) - now
                if self.waiting:
                    wait = min(wait, 0.01)      # resolver threads finish on their own: look again soon
                for key, events in self.selector.select(max(0.0, wait)):
                    self._step(key.data)
        finally:
            for conn in list(self.conns):
                self._close(conn)
            self.selector.close()
        return self.answers

    # -- names, admission and fairness --------------------------------------------------------------
    def _resolved(self, now):
        for key, get in list(self.waiting.items()):
            found = self.resolver.get(get.host)
            if found is None:
                if now + self.timeout >= self.deadline:
                    del self.waiting[key]
                    self.answers[key] = Answer(None, "its name %s did not resolve in time" % get.host)
                continue
            del self.waiting[key]
            addresses, error = found
            if error:
                self.answers[key] = Answer(None, "cannot resolve %s: %s" % (get.host, error))
            else:
                self._admit(key, get, [(family, _with_port(sockaddr, get.port)) for family, sockaddr in addresses])

    def _admit(self, key, get, addresses):
        why = self.admit([sockaddr[0] for _, sockaddr in addresses], get.port) if self.admit else ""
        if why:
            self.answers[key] = Answer(None, why)
            return
        group = _group(get)
        queue = self.ready.get(group)
        if not queue:
            queue = self.ready[group] = collections.deque()
            self.turns.append(group)
            if not self.open[group]:
                self.active += 1
        queue.append((key, get, addresses))

    def _start(self, now):
        """Start what fits: within max_open, each group up to its share, in turns; only GETs that have
        their whole timeout before the batch's deadline."""
        if now + self.timeout > self.deadline:
            return
        while len(self.conns) < self.max_open and self.turns:
            share = max(1, self.max_open // self.active)
            for _ in range(len(self.turns)):
                if self.open[self.turns[0]] < share:
                    break
                self.turns.rotate(-1)
            else:
                return          # every group with GETs waiting holds its share already
            group = self.turns.popleft()
            queue = self.ready[group]
            key, get, addresses = queue.popleft()
            if queue:
                self.turns.append(group)
            else:
                del self.ready[group]
            self.open[group] += 1
            conn = _Conn(key, get, addresses, now + self.timeout)
            self.conns.add(conn)
            try:
                self._connect_next(conn)
            except Exception as exc:    # noqa: a bug with one address must not stop the others
                self._finish(conn, Answer(None, "probe error: %s" % type(exc).__name__))

    # -- one connection --------------------------------------------------------------------------
    def _connect_next(self, conn):
        """Connect to the next address (as socket.create_connection tries them in turn)."""
        while conn.addresses:
            family, sockaddr = conn.addresses.pop(0)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                conn.error = "%s: %s" % (type(exc).__name__, exc)
                continue
            sock.setblocking(False)
            code = sock.connect_ex(sockaddr)
            if code in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                conn.sock, conn.stage = sock, "connect"
                self.selector.register(sock, selectors.EVENT_WRITE, conn)
                return
            sock.close()
            self._note_error(conn, code)
        self._finish(conn, Answer(None, conn.error or "no address to connect to", conn.refused))

    def _note_error(self, conn, code):
        conn.refused = code == errno.ECONNREFUSED
        conn.error = "connection refused" if conn.refused else "cannot connect: %s" % os.strerror(code)

    def _step(self, conn):
        if conn.sock is None:
            return          # finished earlier in this round
        try:
            if conn.stage == "connect":
                code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    self._drop_socket(conn)
                    self._note_error(conn, code)
                    self._connect_next(conn)
                    return
                self._connected(conn)
            elif conn.stage == "tls":
                self._handshake(conn)
            elif conn.stage == "send":
                self._send(conn)
            else:
                self._read(conn)
        except _ssl().SSLWantReadError:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        except _ssl().SSLWantWriteError:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        except (OSError, ValueError, UnicodeError) as exc:     # ssl.SSLError, ssl.CertificateError
            refused = isinstance(exc, ConnectionRefusedError)
            self._finish(conn, Answer(None, "connection refused" if refused else "%s: %s" % (type(exc).__name__, exc),
                                      refused))
        except Exception as exc:    # noqa: a bug in one GET must not stop the others
            self._finish(conn, Answer(None, "probe error: %s" % type(exc).__name__))

    def _connected(self, conn):
        if conn.get.path is None:
            self._finish(conn, Answer(0, connected=True))
            return
        host = "[%s]" % conn.get.host if ":" in conn.get.host else conn.get.host
        conn.out = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: %s\r\nAccept-Encoding: identity\r\n"
                    "Connection: close\r\n\r\n" % (conn.get.path, host, conn.get.port, USER_AGENT)).encode("ascii")
        if conn.get.tls:
            self.selector.unregister(conn.sock)
            conn.sock = _tls_context().wrap_socket(conn.sock, server_hostname=conn.get.host,
                                                   do_handshake_on_connect=False)
            self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)
            conn.stage = "tls"
            self._handshake(conn)
        else:
            conn.stage = "send"
            self._send(conn)

    def _handshake(self, conn):
        conn.sock.do_handshake()
        conn.stage = "send"
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._send(conn)

    def _send(self, conn):
        conn.out = conn.out[conn.sock.send(conn.out):]
        if not conn.out:
            conn.stage = "read"
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn):
        want = conn.get.body_bytes
        while True:
            data = conn.sock.recv(16384)
            if conn.answer is not None:         # the head is complete: some of the body is awaited
                conn.answer = conn.answer._replace(body=(conn.answer.body + data)[:want])
                if not data or len(conn.answer.body) >= want:
                    self._finish(conn, conn.answer)
                    return
            elif not data:
                self._finish(conn, Answer(None, "the connection closed before a complete answer" if conn.head
                                          else "the connection closed without an answer"))
                return
            else:
                conn.head += data
                answer = _answer(conn.head)
                if answer is not None:
                    answer = answer._replace(body=answer.body[:want])
                    if answer.status is None or len(answer.body) >= want:
                        self._finish(conn, answer)
                        return
                    conn.answer = answer
                elif len(conn.head) > MAX_HEAD:
                    self._finish(conn, Answer(None, "an answer head over %d KiB" % (MAX_HEAD // 1024)))
                    return
            pending = getattr(conn.sock, "pending", None)     # TLS: bytes decrypted already, unseen by select
            if not (pending and pending()):
                return

    def _expire(self, now):
        for conn in [c for c in self.conns if now >= c.deadline]:
            if conn.answer is not None:
                self._finish(conn, conn.answer)     # its head came in time; the body is a bonus
                continue
            if conn.stage in ("connect", "tls"):
                detail = "no connection within %ss" % self.timeout
            elif conn.head:
                detail = "no complete answer within %ss (%d bytes of its head)" % (self.timeout, len(conn.head))
            else:
                detail = "no answer within %ss" % self.timeout
            self._finish(conn, Answer(None, detail))

    def _finish(self, conn, answer):
        self.answers[conn.key] = answer._replace(connected=True) if conn.stage != "connect" else answer
        self._close(conn)

    def _close(self, conn):
        if conn in self.conns:
            self.conns.discard(conn)
            group = _group(conn.get)
            self.open[group] -= 1
            if not self.open[group] and group not in self.ready:
                self.active -= 1
        self._drop_socket(conn)

    def _drop_socket(self, conn):
        if conn.sock is not None:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
            conn.sock = None


def _answer(head):
    """The Answer in what has arrived, once a final answer's head is complete; None before that.
    Interim answers (1xx, such as 103 Early Hints) are skipped as http.client does."""
    while True:
        end = _HEAD_END_RE.search(head)
        if end is None:
            return None
        match = _STATUS_RE.match(bytes(head[:end.start() + 2]))
        if match is None:
            first = bytes(head[:head.find(b"\n")] if b"\n" in head else head[:80])
            return Answer(None, "not an HTTP answer: %r" % first[:80])
        status = int(match.group(1))
        if 100 <= status < 200 and status != 101:
            del head[:end.end()]
            continue
        return Answer(status, body=bytes(head[end.end():]))


def _group(get):
    return get.group if get.group is not None else get.host


def _literal(host, port):
    """[(family, sockaddr)] of an IP address, None for a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, (str(ip), port, 0, 0))]
    return [(socket.AF_INET, (str(ip), port))]


def _with_port(sockaddr, port):
    return (sockaddr[0], port) + tuple(sockaddr[2:])


_TLS = []


def _ssl():
    """The ssl module, imported when TLS is first used (or an exception is matched): `status` never
    needs it, and it costs a tenth of its start."""
    import ssl
    return ssl


def _tls_context():
    """The default client context (certificates verified, as http.client does), made once."""
    if not _TLS:
        _TLS.append(_ssl().create_default_context())
    return _TLS[0]


def _max_open():
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 64
    if soft < 0:
        return MAX_OPEN
    return max(8, min(MAX_OPEN, soft // 4))


# -- names --------------------------------------------------------------------------------------------
class Resolver:
    """Names to addresses with a bounded number of threads, shared by every batch: a name whose
    lookup is under way is not looked up again, a result is fresh for `fresh` seconds, and a good one
    stays usable for `stale` seconds while a new lookup is late (DNS down, threads busy)."""

    def __init__(self, threads=8, fresh=10.0, stale=300.0, lookup=None, clock=time.monotonic):
        self.threads, self.fresh, self.stale, self.clock = threads, fresh, stale, clock
        self._lookup = lookup or _getaddrinfo
        self._lock = threading.Lock()
        self._known = {}        # name -> (when, addresses, error)
        self._good = {}         # name -> (when, addresses): the last lookup that gave addresses
        self._queue = collections.OrderedDict()  # names waiting for a thread
        self._running = set()   # names being looked up
        self._busy = 0

    def want(self, name):
        """Start a lookup of name unless a fresh result exists or one is under way or queued."""
        with self._lock:
            known = self._known.get(name)
            if known and self.clock() - known[0] < self.fresh or name in self._running or name in self._queue:
                return
            self._queue[name] = True
            if self._busy < self.threads:
                self._busy += 1
                threading.Thread(target=self._work, name="resolver", daemon=True).start()

    def get(self, name):
        """(addresses, "") or ((), error) when known; None while it is not (yet)."""
        with self._lock:
            now = self.clock()
            known = self._known.get(name)
            if known and (now - known[0] < self.fresh or name not in self._running and name not in self._queue):
                return known[1], known[2]
            good = self._good.get(name)
            if good and now - good[0] < self.stale:
                return good[1], ""
            return None

    def _work(self):
        while True:
            with self._lock:
                if not self._queue:
                    self._busy -= 1
                    return
                name, _ = self._queue.popitem(last=False)
                self._running.add(name)
            try:
                addresses, error = self._lookup(name), ""
            except Exception as exc:    # noqa: any failure is this name's, never the resolver's
                addresses, error = (), str(exc) or type(exc).__name__
            with self._lock:
                now = self.clock()
                self._running.discard(name)
                self._known[name] = (now, tuple(addresses), error)
                if addresses:
                    self._good[name] = (now, tuple(addresses))
                if len(self._known) > 10000:        # names of jobs long gone
                    self._known.clear()
                    self._good.clear()


def resolve(name, timeout, resolver=None, clock=time.monotonic, sleep=time.sleep):
    """[(family, sockaddr)] of a name (or an IP address) within timeout seconds; OSError otherwise.
    For callers outside a batch: the lookup runs on the resolver's threads, this only waits for it."""
    literal = _literal(name, 0)
    if literal is not None:
        return literal
    resolver = resolver or RESOLVER
    resolver.want(name)
    deadline = clock() + timeout
    while True:
        found = resolver.get(name)
        if found is not None:
            if found[1]:
                raise OSError("cannot resolve %s: %s" % (name, found[1]))
            return list(found[0])
        if clock() >= deadline:
            raise OSError("%s did not resolve within %ss" % (name, timeout))
        sleep(0.01)


def _getaddrinfo(name):
    found = socket.getaddrinfo(name, 0, 0, socket.SOCK_STREAM)
    return [(family, sockaddr) for family, _, _, _, sockaddr in found if family in (socket.AF_INET, socket.AF_INET6)]


RESOLVER = Resolver()
