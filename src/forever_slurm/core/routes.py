"""Writing Traefik's dynamic config: one file per routed service in .work/traefik-watch/, written
only when it changes; a service whose template is broken, whose plan failed or whose file cannot be
written keeps its last good file, and the others are written anyway."""

import logging
import os

from ..common import fsutil
from ..common.errors import ConfigError
from ..systems import traefik, traefik_binary, traefik_files

log = logging.getLogger(__name__)


def wake_url(port):
    return "http://127.0.0.1:%d" % port


class RenderCache:
    """The last rendered Traefik file of each service: a steady pass renders nothing (at 10,000 jobs
    rendering would be a third of the pass), while any change of template or servers renders afresh."""

    def __init__(self):
        self._last = {}

    def render(self, service, template, servers, version=None, neighbours=(), passive=True):
        key = (tuple(servers), template.balancer, version, tuple(neighbours), passive)
        hit = self._last.get(service)
        if hit is not None and hit[0] == key and hit[1] == template.data:
            return hit[2]
        text = traefik.render_dynamic(service, template, servers, version, neighbours, passive)
        self._last[service] = (key, template.data, text)
        return text


class RouteWriter:
    """reserve: fsutil.Reserve (room kept for a full disk); faults: faults.Faults."""

    def __init__(self, layout, settings, reserve, faults):
        self.layout = layout
        self.settings = settings
        self.reserve = reserve
        self.faults = faults
        self.rendered = RenderCache()

    def write(self, routes, loaded, failed=(), wake_ports=None):
        """routes: {service: [Server]}; wake_ports: {service: port of its wake proxy}: a route to it
        carries no passive health check (the proxy answers 503 when a request waited too long, and
        Traefik would then take it out and answer the next requests itself, unheld)."""
        wake_ports = wake_ports or {}
        keep = set(traefik.dynamic_name(name) for name in failed)
        keep |= set(traefik.dynamic_name(name) for name, item in loaded.items() if item.template is None)
        version = self._traefik_version()
        neighbours = sorted(loaded)
        for service, servers in sorted(routes.items()):
            keep.add(traefik.dynamic_name(service))
            item = loaded.get(service)
            if item is not None and item.template is not None:
                proxied = service in wake_ports and any(s.url == wake_url(wake_ports[service]) for s in servers)
                self._write_one(service, item.template, servers, version, neighbours, not proxied)
        try:
            for removed in traefik_files.remove_stale(self.layout.watch, sorted(keep)):
                log.info("traefik: removed %s (service no longer active)", removed)
        except OSError as exc:
            self.faults.report("traefik-clean", "cannot tidy %s: %s" % (self.layout.watch, exc.strerror or exc))

    def _traefik_version(self):
        """Which Traefik features to render (the passive health check): asked from `traefik version`,
        cached; without a version, what every Traefik 3 accepts."""
        try:
            found = traefik_binary.version_in_use(self.settings.traefik_bin, self.layout, os.environ)
            traefik_binary.remember_version(self.layout, found)
            self.faults.clear("traefik-version")
            return found.version if found else None
        except Exception as exc:   # noqa: see the docstring
            self.faults.report("traefik-version", "cannot tell the Traefik version: %s" % exc)
            return None

    def _write_one(self, service, template, servers, version, neighbours, passive):
        path = os.path.join(self.layout.watch, traefik.dynamic_name(service))
        try:
            text = self.rendered.render(service, template, servers, version, neighbours, passive)
        except ConfigError as exc:
            self.faults.report("render:" + service, "%s: %s (Traefik keeps its last good file)" % (service, exc))
            return
        self.faults.clear("render:" + service)
        try:
            set_aside_foreign(path, self.layout)
            written = self.reserve.write(lambda: traefik_files.write_if_changed(path, text, self.layout.staging_tmp))
        except OSError as exc:
            self.faults.report("traefik:" + service, "cannot write %s: %s; Traefik keeps the last good file, "
                               "retrying" % (path, exc.strerror or exc))
            return
        self.faults.clear("traefik:" + service)
        if written:
            log.info("traefik: %s -> %s", service, ", ".join(
                s.url + (" (draining)" if s.weight == 0 else " (wake proxy)" if not passive else "")
                for s in servers) or "no backends (503)")


def set_aside_foreign(path, layout):
    """A file in traefik-watch that we did not write (e.g. staged by the original bash tool) is moved
    to .work/backup/ before we take its name, never silently overwritten."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return
    if first.startswith(traefik.MARKER):
        return
    target = fsutil.move_aside(path, into=os.path.join(layout.work, "backup"))
    log.warning("moved %s (not written by forever-slurm) to %s", path, target)
