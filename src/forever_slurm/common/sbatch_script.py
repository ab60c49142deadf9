"""The #SBATCH header of a batch script, read as sbatch reads it (text only: nothing runs)."""

from .validate import ascii_digits


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


def time_limit_seconds(text):
    """Seconds of an sbatch --time value (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS);
    None for UNLIMITED, INFINITE or anything else."""
    text = (text or "").strip()
    days = 0
    if "-" in text:
        day_text, _, text = text.partition("-")
        if not ascii_digits(day_text):
            return None
        days = int(day_text)
        parts = text.split(":")
        if not parts or not all(ascii_digits(p) for p in parts) or len(parts) > 3:
            return None
        hours, minutes, seconds = (list(map(int, parts)) + [0, 0])[:3]
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    parts = text.split(":")
    if not parts or not all(ascii_digits(p) for p in parts) or len(parts) > 3:
        return None
    numbers = list(map(int, parts))
    if len(numbers) == 1:
        return numbers[0] * 60
    if len(numbers) == 2:
        return numbers[0] * 60 + numbers[1]
    return (numbers[0] * 60 + numbers[1]) * 60 + numbers[2]


def option_lines(options, names):
    """[(line, option, value)] of the #SBATCH options among `names`, from sbatch_options' list."""
    return [(line, option, value) for line, option, value in options if option in names]
