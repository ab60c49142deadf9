"""Makes tests/harness importable for e2e tests and provides the shared local Slurm cluster fixtures."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.fixtures import clean_cluster, clean_shared_cluster, local_cluster, shared_cluster  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: starts real daemons (Slurm, Traefik); slower")
