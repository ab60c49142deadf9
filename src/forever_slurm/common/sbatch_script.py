"""The #SBATCH header of a batch script, read as sbatch reads it (text only: nothing runs)."""


def script_job_name(text):
    """(job name, line number) from a batch script's #SBATCH header, or (None, None).

    sbatch stops reading #SBATCH lines at the first command, and so do we; a later --job-name
    overrides an earlier one, as in sbatch."""
    found = None, None
    for number, option, value in sbatch_options(text):
        if option in ("--job-name", "-J"):
            found = value, number
    return found


def sbatch_options(text):
    """[(line, option, value)] from the #SBATCH lines before the first command."""
    found = []
    for number, raw in enumerate(text.split("\n"), 1):     # (splitlines would also split at \f, \x1c, ...)
        line = raw.strip()
        if number == 1 and line.startswith("#!"):
            continue
        if not line:
            continue
        if not line.startswith("#"):
            break
        if not line.startswith("#SBATCH"):
            continue
        body = line[len("#SBATCH"):]
        if body and not body[0].isspace():
            continue
        body = body.split("#", 1)[0].strip()
        if not body:
            continue
        option, sep, value = body.partition("=")
        if not sep:
            option, _, value = body.partition(" ")
        option = option.strip()
        if not value.strip() and len(option) > 2 and option[0] == "-" and option[1].isalpha():
            option, value = option[:2], option[2:]      # a short option glued to its value: -Jname, -ofile
        found.append((number, option, value.strip().strip("\"'")))
    return found
