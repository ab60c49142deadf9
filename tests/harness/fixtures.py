"""Pytest fixtures that share one throwaway local Slurm cluster across a test session."""

import os
import shutil
import tempfile

import pytest

from .slurm_cluster import LocalCluster, missing_packages


def _reusable_cluster():
    """The cluster $FOREVER_CLUSTER_DIR points at when it is up, else None."""
    base_dir = os.environ.get("FOREVER_CLUSTER_DIR")
    if not base_dir:
        return None
    cluster = LocalCluster(base_dir)
    return cluster if cluster.is_up() else None


@pytest.fixture(scope="session")
def local_cluster():
    """A running LocalCluster (3 nodes): reuses $FOREVER_CLUSTER_DIR's, else starts one in a temp dir.

    Only a cluster this fixture started is stopped (and its directory removed) at session end.
    """
    cluster = _reusable_cluster()
    if cluster is not None:
        yield cluster
        return
    missing = missing_packages()
    if missing:
        pytest.skip("Slurm is not installed; run bin/install-slurm (Debian packages: %s)" % " ".join(missing))
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root")
    # mkdtemp in /tmp, not tmp_path: slurmd's step sockets need a short path.
    base_dir = tempfile.mkdtemp(prefix="fsc-", dir="/tmp")
    cluster = LocalCluster(base_dir)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture
def clean_cluster(local_cluster):
    """The shared cluster with no jobs left from earlier tests and every node idle."""
    if not local_cluster.controller_up():
        local_cluster.start_controller()
    assert local_cluster.cancel_all(timeout=40), "jobs from an earlier test would not go away"
    local_cluster.wait_idle(timeout=40)
    return local_cluster


@pytest.fixture(scope="session")
def shared_cluster():
    """A running SharedCluster (3 nodes, GraceTime 5 s, partition `short` with MaxTime 5) in a temp dir,
    stopped at session end. Tests change it only through its helpers and undo what they change."""
    from .shared_cluster import SharedCluster
    missing = missing_packages()
    if missing:
        pytest.skip("Slurm is not installed; run bin/install-slurm (Debian packages: %s)" % " ".join(missing))
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root")
    base_dir = tempfile.mkdtemp(prefix="fss-", dir="/tmp")
    cluster = SharedCluster(base_dir, grace_time=5)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture
def clean_shared_cluster(shared_cluster):
    """The shared cluster with no job of any user left and every node idle."""
    assert shared_cluster.stop_filling(timeout=30), "the other user's jobs would not go away"
    assert shared_cluster.cancel_all(timeout=40), "jobs from an earlier test would not go away"
    shared_cluster.wait_idle(timeout=40)
    return shared_cluster
