"""Carrying out a plan's actions on Slurm: submit, cancel, let a pending job run anywhere. Each
outcome is recorded in memory where it happens (outcomes.py), and returned."""

import logging

from ..common import services
from ..common.errors import CommandError, ConfigError
from ..systems import slurm as slurm_mod, slurm_facts
from . import outcomes
from .model import Cancel, ClearExclude, Submit

log = logging.getLogger(__name__)


class Executor:
    """slurm: systems.slurm.Slurm; save_intents(memory) -> bool saves memory before any sbatch runs."""

    def __init__(self, layout, slurm, save_intents, pyz=None, may_act=lambda: True):
        self.layout = layout
        self.slurm = slurm
        self.save_intents = save_intents
        self.pyz = pyz
        self.may_act = may_act      # checked before every sbatch and scancel (the lease's fence)

    def act(self, actions, memory, loaded, now, policy):
        """Memory after carrying out `actions`: cancels first, then submissions, then exclusions. Nothing
        is done (and so nothing recorded) once may_act() says this loop may no longer act."""
        if actions and not self.may_act():
            log.warning("not acting on %d action(s): this loop's lead is not renewed in time", len(actions))
            return memory
        cancels = [a for a in actions if isinstance(a, Cancel)]
        if cancels:
            memory = self._cancel(cancels, memory, now, policy)
        submits = [a for a in actions if isinstance(a, Submit)]
        if submits:
            memory = self._submit_all(submits, memory, loaded, now, policy)
        for action in actions:
            if isinstance(action, ClearExclude):
                memory = self._clear_exclude(action, memory)
        return memory

    def _clear_exclude(self, action, memory):
        try:
            self.slurm.clear_exclude(action.job_id)
        except CommandError as exc:
            log.warning("job %s: could not clear its node exclusion (retried at the next look): %s",
                        action.job_id, exc)
            return memory
        log.info("job %s of %s: still pending, may now run on any node", action.job_id, action.service)
        return outcomes.record_exclude_cleared(memory, action.job_id)

    def _submit_all(self, submits, memory, loaded, now, policy):
        """Record the intent of every submission on disk first: a crash between sbatch and the next
        save then neither loses the job (it is adopted from squeue) nor submits it twice."""
        with_intents, keys = outcomes.record_intents(memory, submits, now)
        if not self.save_intents(with_intents):
            log.error("not submitting %d job(s) while the state file cannot be written", len(submits))
            return memory
        memory = with_intents
        failed_services = set()
        for action, key in zip(submits, keys):
            item = loaded.get(action.service)
            if not self.may_act():      # the lead lapsed meanwhile (a pause, a stalled filesystem)
                memory = memory._replace(jobs={k: v for k, v in memory.jobs.items() if k != key})
                continue
            if action.service in failed_services or item is None or item.definition is None:
                memory = memory._replace(jobs={k: v for k, v in memory.jobs.items() if k != key})
                continue
            memory, ok = self._submit(action, key, memory, item.definition, now, policy)
            if not ok:
                failed_services.add(action.service)
        return memory

    def _submit(self, action, intent, memory, definition, now, policy):
        """(memory, whether sbatch gave a job id)."""
        try:
            script = services.stage(self.layout, definition)
        except (OSError, ConfigError) as exc:
            log.error("%s: cannot stage %s into %s: %s", action.service, definition.folder, self.layout.work, exc)
            return outcomes.record_submit_failed(memory, action.service, "cannot stage: %s" % exc, now,
                                                 policy, intent), False
        output = None if definition.script_sets_output else "%x-%j.out"
        env = {"FOREVER_ROOT": self.layout.root}
        if self.pyz:
            env["FOREVER_PYZ"] = self.pyz
        exclude = action.exclude
        try:
            try:
                job_id = self.slurm.submit(script, self.layout.slurm_output, exclude, output, env, action.service,
                                           **_time(action))
            except CommandError as exc:
                if not exclude or not slurm_mod.refused_for_nodes(exc):
                    raise
                # Excluding busy nodes left no node the job could ever run on (a small cluster):
                # spreading is a preference, so once more without it. Any other failure is not retried.
                log.info("%s: sbatch with --exclude=%s refused (%s); submitting without it",
                         action.service, ",".join(exclude), exc)
                exclude = ()
                job_id = self.slurm.submit(script, self.layout.slurm_output, exclude, output, env, action.service,
                                           **_time(action))
        except CommandError as exc:
            memory = outcomes.record_submit_failed(memory, action.service, "sbatch failed: %s" % exc,
                                                   now, policy, intent)
            delay = memory.services[action.service].next_try - now
            limit = slurm_facts.rejection("%s %s" % (exc.stderr, exc))
            why = " (%s%s)" % (limit.what, slurm_facts.where_to_change(limit, definition)) if limit else ""
            log.error("%s: sbatch failed: %s%s; next try in %ds", action.service, exc.stderr or exc, why, delay)
            return memory, False
        log.info("submitted job %s of %s (%s%s%s)", job_id, action.service, action.reason,
                 ", avoiding %s" % ",".join(exclude) if exclude else "",
                 ", %d min to end before a maintenance" % (action.time_limit // 60) if action.time_limit else "")
        return outcomes.record_submitted(memory, action.service, job_id, now, exclude, intent), True

    def _cancel(self, cancels, memory, now, policy):
        ids = [a.job_id for a in cancels]
        try:
            self.slurm.cancel(ids)
        except CommandError as exc:
            memory = outcomes.record_cancel_failed(memory, ids, now, policy)
            retry = min((memory.jobs[i].cancel_retry_at for i in ids if i in memory.jobs), default=now)
            log.error("scancel %s failed: %s; the job(s) stay out of Traefik, retry in %ds",
                      " ".join(ids), exc, max(0, retry - now))
            return memory
        for action in cancels:
            log.info("cancelled job %s of %s (%s)", action.job_id, action.service, action.reason)
        return outcomes.record_cancelled(memory, ids, now)


def _time(action):
    """submit()'s time_limit, only when the plan shortens the job (fakes need not know the word)."""
    return {"time_limit": action.time_limit} if action.time_limit else {}
