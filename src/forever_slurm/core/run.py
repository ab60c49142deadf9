"""The `run` command: the loop under the root's lock, one look (--once) or until SIGTERM/SIGINT."""

import logging
import signal

from . import lease, lock, loop, scheduler
from .. import __version__
from ..common import logfiles, settings as settings_mod
from ..common.errors import ForeverError
from ..systems import slurm

log = logging.getLogger(__name__)


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
    with lock.RootLock(layout.lock_file, unit="forever-slurm-%s" % layout.unit_id) as root_lock:
        leader = lease.Lease(layout.lease_dir, layout.host)
        controller = loop.Controller(layout, conf, slurm.Slurm(timeout=conf.slurm_timeout),
                                     pyz=settings_mod.running_pyz(), lease=leader)
        if once:
            try:
                return 0 if controller.look() else 1
            finally:
                controller.release()
        wakeup = scheduler.Wakeup()
        stopping, lost = [], []
        wakeup.catch_signals((signal.SIGTERM, signal.SIGINT), stopping.append)
        controller.demand.wake = start_wake_proxy(controller, wakeup)
        log.info("forever-slurm %s: root %s, services %s, a look at Slurm every %ss", __version__, layout.root,
                 settings_mod.format_service_list(conf.service_list) or "none", conf.sleep_interval)
        scheduler.run_forever(controller, lambda: bool(stopping) or _lock_lost(root_lock, lost, controller),
                              wait=wakeup.wait)
        if lost:
            raise lost[0]
        log.info("stopped")
    return 0


def start_wake_proxy(controller, wakeup):
    """The 127.0.0.1 proxy that holds requests for MIN-MAX services with no backend (run, not --once:
    a proxy must outlive the pass that routes to it). A request it holds ends the loop's wait."""
    from . import wake
    conf = controller.settings
    return wake.WakeProxy(on_wake=lambda service: wakeup.set(), timeout=conf.wake_timeout,
                          spool_dir=controller.layout.wake_spool,
                          also_ours=(conf.traefik_port, conf.traefik_ping_port),
                          log=lambda message: log.info("wake proxy: %s", message))


def _lock_lost(root_lock, lost, controller):
    """Asked before every pass: True (the loop stops) when another loop took this root's lock after its
    file was deleted; a deleted lock file is otherwise made again, and this loop goes on. The files
    of the root are then the other loop's: this one stops without writing them."""
    try:
        root_lock.check()
    except ForeverError as exc:
        log.error("%s", exc)
        lost.append(exc)
        controller.owns_root = False
        return True
    return False
