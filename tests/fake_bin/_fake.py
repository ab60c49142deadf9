"""Shared state for the systemctl/loginctl/crontab fakes: every argv logged, state kept in $FAKE_STATE."""

import json
import os
import sys


def state_dir():
    path = os.environ.get("FAKE_STATE")
    if not path:
        sys.stderr.write("fake: FAKE_STATE is not set\n")
        sys.exit(97)
    os.makedirs(path, exist_ok=True)
    return path


def record(tool):
    with open(os.path.join(state_dir(), "calls.log"), "a") as handle:
        handle.write(json.dumps([tool] + sys.argv[1:]) + "\n")


def path(*parts):
    return os.path.join(state_dir(), *parts)
