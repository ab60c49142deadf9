"""The `run` command: the loop under the root's lock, one cycle (--once) or until SIGTERM."""

import logging
import signal

from . import lock, loop
from .. import __version__
from ..common import logfiles, settings as settings_mod
from ..common.errors import ForeverError
from ..systems import slurm

log = logging.getLogger("forever_slurm")


def run_command(layout, once=False):
    """Exit code: 0, or with once 1 when Slurm could not be observed."""
    conf = settings_mod.load(layout)
    try:
        layout.make_dirs()
    except OSError as exc:
        raise ForeverError("cannot create the folders under %s: %s" % (layout.work, exc.strerror or exc))
    logfiles.to_file(layout, "loop.log")
    if not conf.service_list:
        log.warning("SERVICE_LIST is empty in %s: nothing to run (try: config)", layout.env_file)
    with lock.RootLock(layout.lock_file) as root_lock:
        controller = loop.Controller(layout, conf, slurm.Slurm(timeout=conf.slurm_timeout),
                                     pyz=settings_mod.running_pyz())
        if once:
            return 0 if controller.cycle() else 1
        stopping, lost = [], []
        signal.signal(signal.SIGTERM, lambda *a: (stopping.append(True), controller.wakeup.set()))
        controller.start_wake_proxy()
        log.info("forever-slurm %s: root %s, services %s, a look at Slurm every %ss", __version__, layout.root,
                 settings_mod.format_service_list(conf.service_list) or "none", conf.sleep_interval)
        controller.run_forever(lambda: bool(stopping) or _lock_lost(root_lock, lost))
        if lost:
            raise lost[0]
        log.info("stopped")
    return 0


def _lock_lost(root_lock, lost):
    """Asked before every pass: True (the loop stops) when another loop took this root's lock after its
    file was deleted; a deleted lock file is otherwise made again, and this loop goes on."""
    try:
        root_lock.check()
    except ForeverError as exc:
        log.error("%s", exc)
        lost.append(exc)
        return True
    return False
