"""Each active service's files (its .sub and Traefik template), read afresh at every pass, so an edit
applies without a restart; a problem is logged once when it appears and once when it is gone."""

import logging
from typing import NamedTuple

from ..common import services
from ..common.errors import ConfigError
from ..systems import traefik, traefik_files

log = logging.getLogger(__name__)


class Loaded(NamedTuple):
    """A service's files, read this pass: what to submit and how to route it."""
    definition: object      # services.ServiceDef, or None when its .sub is unusable
    template: object        # its Traefik template, or None when its .yml is unusable
    error: str


class ServiceFiles:
    def __init__(self, layout, logged_errors=None):
        self.layout = layout
        self._logged = dict(logged_errors or {})     # service -> the problem last logged ('' when fine)

    def load(self, names, desired):
        """{name: Loaded} of every name; a bundled service is unpacked into services/ first."""
        loaded = {}
        for name in sorted(names):
            definition, template, errors = None, None, []
            try:
                services.unpack_bundled(self.layout, name)
                definition = services.load(self.layout, name)
            except ConfigError as exc:
                errors.append(str(exc))
            except Exception as exc:   # noqa: one service's files must not stop the others
                errors.append("%s: cannot load the service folder: %s" % (name, exc))
            try:
                if definition is not None and definition.template:
                    template = traefik_files.load_template(definition.template, name)
                elif definition is not None or name not in desired:
                    template = traefik.default_template(name)
            except ConfigError as exc:
                errors.append(str(exc) + " (Traefik keeps its last good config for %s)" % name)
            except Exception as exc:   # noqa
                errors.append("%s: cannot load the Traefik template: %s" % (name, exc))
            loaded[name] = Loaded(definition, template, "; ".join(errors))
            self._log_change(name, loaded[name].error)
        return loaded

    def _log_change(self, name, error):
        if error != self._logged.get(name, ""):
            if error:
                log.error("%s", error)
            else:
                log.info("%s: service files are fine again", name)
            self._logged[name] = error


def health_of(item):
    """(health path, expected status) of a loaded service; '/' and any 2xx/3xx when unknown."""
    template = item.template if item else None
    if template is None:
        return "/", None
    try:
        return traefik.health_path(template), traefik.health_status(template)
    except Exception:   # noqa: a template quirk must not stop the probes of every service
        return "/", None
