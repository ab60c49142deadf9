"""A minimal OpenAI-style client for the LLM tests and bench/llm: one chat completion, plain or streamed.

Stdlib only. A streamed answer is read line by line as it arrives, so the caller learns when the
first token came (time to first token) and whether the stream ended properly ('data: [DONE]').
"""

import http.client
import json
import time

from .tiny_model import EOS_ID


class Stream(object):
    """What one streamed chat completion saw: seconds to the first content chunk and to the end."""
    __slots__ = ("status", "chunks", "first", "total", "done", "finish", "error", "started")

    def __init__(self):
        self.status, self.chunks, self.first, self.total = None, 0, None, None
        self.done, self.finish, self.error, self.started = False, None, "", time.time()

    @property
    def ok(self):
        """Whole: a 200 whose last chunk gave a finish_reason, then 'data: [DONE]'. (An interrupted
        llama-cpp-python stream sends [DONE] without a finish_reason. A random model's bytes are often
        not UTF-8, which the server holds back, so a whole stream may carry little text.)"""
        return self.status == 200 and self.done and self.finish is not None and not self.error


def _body(max_tokens, stream, prompt):
    return json.dumps({
        "model": "local-llm", "max_tokens": max_tokens, "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
        # A random model often says end-of-text early; forbidding it makes the length predictable.
        "logit_bias": {str(EOS_ID): -100},
    })


def _headers(api_key):
    return {"Content-Type": "application/json", "Authorization": "Bearer %s" % api_key}


def get_json(port, path, api_key, timeout=10.0, host="127.0.0.1"):
    """(status, parsed JSON or None) of an authenticated GET."""
    return _json_request(host, port, "GET", path, None, api_key, timeout)


def chat(port, prefix, api_key, max_tokens=16, prompt="Hello", timeout=60.0, host="127.0.0.1"):
    """(status, parsed JSON or None) of one non-streamed chat completion at prefix + /v1/chat/completions."""
    return _json_request(host, port, "POST", prefix + "/v1/chat/completions", _body(max_tokens, False, prompt),
                         api_key, timeout)


def _json_request(host, port, method, path, body, api_key, timeout):
    """(status, parsed JSON or None) of one request."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=_headers(api_key))
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            return response.status, None
    finally:
        conn.close()


def stream(port, prefix, api_key, max_tokens=64, prompt="Hello", timeout=600.0, host="127.0.0.1"):
    """One streamed chat completion read to its end; never raises (a broken stream is recorded)."""
    result = Stream()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", prefix + "/v1/chat/completions", body=_body(max_tokens, True, prompt),
                     headers=_headers(api_key))
        response = conn.getresponse()
        result.status = response.status
        if response.status != 200:
            result.error = response.read()[:200].decode("utf-8", "replace")
            return result
        while True:
            line = response.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                result.done = True
                break
            chunk = json.loads(data.decode("utf-8", "replace"))
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                result.finish = choice["finish_reason"]
            delta = choice.get("delta", {})
            if delta.get("content"):
                if result.first is None:
                    result.first = time.time() - result.started
                result.chunks += 1
    except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as exc:
        result.error = "%s: %s" % (type(exc).__name__, exc)
    finally:
        result.total = time.time() - result.started
        conn.close()
    return result
