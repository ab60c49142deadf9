"""`check`: .env and every wanted service, validated as the loop would use them; reads only."""

import os
from typing import List, NamedTuple

from ..common import services, settings as settings_mod
from ..systems import slurm, traefik, traefik_binary, traefik_files
from ..common.errors import ForeverError


class CheckReport(NamedTuple):
    ok: List[str]           # one line per usable service
    problems: List[str]     # one `file:line: message` per problem
    summary: str


def check_root(layout, check_squeue=None):
    """Every problem of the root's settings and wanted services at once, each with its file and line (a
    bad line does not hide the others, nor bad settings the services), and whether squeue answers the
    loop (and how: Slurm < 20.11 has no --me)."""
    problems = []
    if not os.path.exists(layout.env_file):
        problems.append("%s: missing: %s has no forever-slurm settings; run `config` there (or pass --root "
                        "with the directory you set up)" % (layout.env_file, layout.root))
    try:
        conf, errors = settings_mod.check(layout)
        values = settings_mod.load_values(layout, problems=[])
    except ForeverError as exc:
        conf, errors, values = None, [exc], {}
    problems += [str(exc) for exc in errors]
    problems += [str(exc) for exc in settings_mod.unknown_keys(layout, values)]
    wanted = conf.service_list if conf else _listed(values)
    found = traefik_binary.version_in_use(conf.traefik_bin, layout, os.environ) if conf else None
    version = found.version if found else None
    neighbours = [name for name, _ in wanted]
    ok = []
    for name, count in wanted:
        try:
            ok.append(_check_service(layout, name, count, version, neighbours, values.get("SERVICE_LIST")))
        except ForeverError as exc:
            problems.append(str(exc))
    squeue = (check_squeue or slurm.check_squeue)() if wanted else None
    if squeue and squeue.line:
        (ok if squeue.ok else problems).append(squeue.line)
    if problems:
        summary = "%d problem(s) found" % len(problems)
    else:
        summary = "all good" if wanted else "all good (SERVICE_LIST is empty)"
    return CheckReport(ok, problems, summary)


def _listed(values):
    """SERVICE_LIST's services when the settings as a whole are not usable (its own problem is reported)."""
    try:
        return settings_mod.parse_service_list(values.get("SERVICE_LIST"))
    except ForeverError:
        return []


def _check_service(layout, name, count, version, neighbours, listed_at=None):
    """The ok line of one service; ForeverError naming the file and line of its first problem."""
    if name in services.bundled_names() and not os.path.isdir(os.path.join(layout.services, name)):
        return "ok: %s/%s (bundled; the loop unpacks it into services/%s/ on its first look)" % (name, count.text, name)
    definition = services.load(layout, name, listed_at)
    if definition.template:
        # Rendered once with no servers, as the loop would: version gate and name clashes included.
        template = traefik_files.load_template(definition.template, name, version)
        traefik.render_dynamic(name, template, [], version, neighbours)
    return "ok: %s/%s (%s%s)" % (name, count.text, os.path.relpath(definition.script, layout.root),
                                 ", " + os.path.relpath(definition.template, layout.root)
                                 if definition.template else ", default Traefik route")
