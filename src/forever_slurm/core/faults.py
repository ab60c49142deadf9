"""What the loop keeps retrying (a full disk, an unwritable folder, a Traefik it cannot ask): each
fault is logged once when it starts and once when it is fixed, and `status` shows those still open."""

import logging

log = logging.getLogger(__name__)


class Faults:
    """The open faults by key ('state', 'traefik:<service>', ...); the one place they live."""

    def __init__(self):
        self._open = {}

    def report(self, key, message):
        if self._open.get(key) != message:
            log.error("%s", message)
            self._open[key] = message

    def clear(self, key):
        if self._open.pop(key, None) is not None:
            log.info("fixed: %s works again", key)

    def as_dict(self):
        return dict(self._open)

    def __contains__(self, key):
        return key in self._open
