"""Whether a Traefik answers on its loopback ping entry point, within an overall deadline."""

from . import httpget


def ping(port, timeout=1.0):
    """"" when GET http://127.0.0.1:port/ping answers 200 within timeout (in all, however the answer
    trickles in), else what went wrong."""
    answer = httpget.fetch_all({"ping": httpget.Get("127.0.0.1", port, "/ping", body_bytes=64)}, timeout).get(
        "ping", httpget.Answer(None, "no answer within %ss" % timeout))
    if answer.status == 200:
        return ""
    if answer.status is not None:
        return "its ping answered HTTP %d %s" % (answer.status, answer.body.decode("utf-8", "replace").strip())
    if answer.refused:
        return "nothing answers its ping on 127.0.0.1:%d" % port
    if "within" in answer.detail:
        return "its ping on 127.0.0.1:%d did not answer within %ss" % (port, timeout)
    return "its ping on 127.0.0.1:%d failed: %s" % (port, answer.detail)
