"""The one error hierarchy; only cli.main turns these into a message and an exit code."""

import re


class ForeverError(Exception):
    """A problem the user can act on; str() names the file and line when known."""

    def __init__(self, message, path=None, line=None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self):
        where = ""
        if self.path is not None:
            where = "%s:%s: " % (self.path, self.line) if self.line else "%s: " % (self.path,)
        return where + self.message


class ConfigError(ForeverError):
    """Bad user input: .env, a service folder, a template, a command-line value."""


class CommandError(ForeverError):
    """An outside command failed, timed out or could not be started."""

    def __init__(self, argv, returncode, stderr, message=None):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = (stderr or "").strip()
        if message is None:
            detail = explaining_line(self.stderr) or "no error output"
            if returncode is None:
                message = "%s: %s" % (self.argv[0], detail)
            else:
                message = "%s exited %s: %s" % (self.argv[0], returncode, detail)
        super().__init__(message)


def explaining_line(stderr):
    """The line of a command's error output that says what went wrong: the last one that is not a hint
    such as 'Try "squeue --help" for more information' or a usage line, which explain nothing."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    telling = [line for line in lines if not _HINT.search(line)]
    return (telling or lines or [""])[-1]


_HINT = re.compile(r"^(try\b.*--?help|usage:|for more information)", re.I)


class LockedError(ForeverError):
    """Another process holds the root's lock."""
