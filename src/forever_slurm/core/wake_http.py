"""The wake proxy's HTTP, as pure functions over bytes: a client's request head and body framing, the
request we send a backend, the backend's answer head, and our own short answers. No sockets here:
core/wake.py owns those, so every rule below is tested on bytes alone."""

import http.client
import io
from typing import List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from ..common import validate

MAX_HEAD = 64 * 1024            # request or answer line plus headers; longer is refused, not buffered
METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are not forwarded; every Proxy-*
# header is dropped too. Host, Content-Length and Expect are written anew: the body is already read.
HOP_BY_HOP = frozenset(["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"])
REWRITTEN = frozenset(["host", "content-length", "expect"])
RESPONSE_HOP_BY_HOP = frozenset([b"connection", b"keep-alive", b"proxy-connection"])
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Head(NamedTuple):
    method: str
    target: str                     # path and query
    headers: List[Tuple[str, str]]  # to forward, in the client's order
    length: Optional[int]           # Content-Length; None when chunked or no body
    chunked: bool
    expects_continue: bool          # an HTTP/1.1 client waits for "100 Continue" before its body

    @property
    def framed(self):
        """The client sent a body (length or chunks), even an empty one: the backend gets a length too."""
        return self.chunked or self.length is not None


class BadRequest(Exception):
    """A request we answer ourselves with `status` (400, 431, 501) and the message."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


def head_end(data):
    """Index just past the blank line ending a head in data (CRLF or bare LF lines), or -1."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") for i in (data.find(sep),) if i >= 0]
    return min(ends) if ends else -1


def parse_head(data):
    """Head of a request whose head is data (up to and including its blank line); BadRequest if not HTTP."""
    line, _, rest = bytes(data).partition(b"\n")
    words = line.rstrip(b"\r").decode("latin-1").split()
    if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, "bad request line")
    method, target, version = words
    if method not in METHODS:
        raise BadRequest(501, "method %s is not supported" % method[:20])
    try:
        message = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException as exc:
        raise BadRequest(431, "bad or too many headers (%s)" % type(exc).__name__)
    chunked, length = _framing(message)
    expects = version == "HTTP/1.1" and message.get("Expect", "").strip().lower() == "100-continue"
    return Head(method, _target(target), _forwarded_headers(message), length, chunked,
                expects and (chunked or bool(length)))


def _framing(message):
    """(chunked, length) of a request body. Conflicting lengths are refused: a proxy that picks one of
    them while the backend picks another is how requests get smuggled."""
    codings = [c.strip().lower() for v in message.get_all("Transfer-Encoding", []) for c in v.split(",")]
    codings = [c for c in codings if c]
    if codings:
        if codings[-1] != "chunked":
            raise BadRequest(400, "Transfer-Encoding must end with chunked")
        return True, None
    lengths = set(v.strip() for v in message.get_all("Content-Length", []))
    if not lengths:
        return False, None
    if len(lengths) > 1 or not validate.ascii_digits(next(iter(lengths))):
        raise BadRequest(400, "bad Content-Length")
    return False, int(lengths.pop())


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


class Chunked:
    """Decodes a chunked body as its bytes arrive; chunk extensions and trailers are dropped."""

    MAX_LINE = 4096
    MAX_TRAILERS = 64 * 1024

    def __init__(self):
        self.left = 0               # bytes of the current chunk still to come; 0: a line is next
        self.crlf = False           # a chunk's data is done: the empty line ending it is next
        self.trailers = None        # bytes of trailers seen, once the last (empty) chunk came
        self.done = False

    def feed(self, buffer):
        """Body bytes decoded from the front of buffer (a bytearray, consumed as far as it goes);
        ValueError when the framing is wrong."""
        pieces = []
        while buffer and not self.done:
            if self.left:
                piece = bytes(buffer[:self.left])
                del buffer[:len(piece)]
                self.left -= len(piece)
                self.crlf = not self.left
                pieces.append(piece)
                continue
            line = self._take_line(buffer)
            if line is None:
                break
            if self.crlf:
                if line:
                    raise ValueError("chunk longer than its size")
                self.crlf = False
            elif self.trailers is not None:
                self.trailers += len(line) + 1
                if self.trailers > self.MAX_TRAILERS:
                    raise ValueError("trailers too long")
                self.done = not line.strip()
            else:
                self._size(line)
        return pieces

    def _size(self, line):
        digits = line.split(b";", 1)[0].strip()
        if not digits or len(digits) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in digits):
            raise ValueError("bad chunk size")
        self.left = int(digits, 16)
        if not self.left:
            self.trailers = 0

    def _take_line(self, buffer):
        """A line (without its CRLF) taken from buffer; None when it has not all come yet."""
        end = buffer.find(b"\n", 0, self.MAX_LINE + 1)
        if end < 0:
            if len(buffer) > self.MAX_LINE:
                raise ValueError("chunked framing line too long")
            return None
        line = bytes(buffer[:end])
        del buffer[:end + 1]
        return line.rstrip(b"\r")


def request_bytes(head, host, port, body_length):
    """The head we send a backend: the client's headers, our Host, the body's length, Connection: close."""
    lines = ["%s %s HTTP/1.1" % (head.method, head.target), "Host: %s:%d" % (host, port)]
    lines.extend("%s: %s" % header for header in head.headers)
    if head.framed or body_length:
        lines.append("Content-Length: %d" % body_length)
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def rewrite_answer_head(head, method):
    """(status, head to send, body length or None for "until the backend closes"); ValueError if not HTTP.

    The head passes as it came but for its connection headers: ours to the client says
    `Connection: close`, so the client does not reuse a connection we are about to close.
    """
    lines = bytes(head).rstrip(b"\r\n").split(b"\r\n")
    fields = lines[0].split(None, 2)
    if len(fields) < 2 or not lines[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise ValueError("answered something that is not HTTP")
    status = int(fields[1])
    if 100 <= status < 200 and status != 101:
        return status, bytes(head), 0
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


def answer_head_end(data):
    """Index just past an answer head's blank line (CRLF only, as backends send it), or -1."""
    end = data.find(b"\r\n\r\n")
    return end + 4 if end >= 0 else -1


def reply_bytes(status, text, headers=(), head_only=False):
    """A short text answer of our own, which closes the connection."""
    body = text.encode("utf-8")
    lines = ["HTTP/1.1 %d %s" % (status, http.client.responses.get(status, "Error")),
             "Server: forever-slurm-wake", "Content-Type: text/plain; charset=utf-8",
             "Content-Length: %d" % len(body), "Connection: close"]
    lines.extend("%s: %s" % header for header in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
