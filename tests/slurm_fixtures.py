"""Pytest fixture ``slurm_cluster``: a real single-node SLURM cluster for the session.

Import it into a conftest.py or test module with
``from slurm_fixtures import slurm_cluster  # noqa: F401``. Importing it in
several places is fine: they share one cluster, started on first use and
stopped after the last user's session teardown.

Where SLURM can't be had (not root and not installed) the tests are skipped,
or fail when ``CI=true``.
"""

import os

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable

_shared: dict = {"cluster": None, "users": 0, "saved_conf": None}


def _start_or_skip(request: pytest.FixtureRequest) -> SlurmCluster:
    if _shared["cluster"] is None:
        cluster = SlurmCluster()
        try:
            cluster.start()
        except (SlurmUnavailable, OSError) as e:
            cluster.remove()
            message = f"no SLURM test cluster: {e}"
            if os.environ.get("CI") == "true":
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(
                    f"SLURM test cluster started in {cluster.startup_s:.1f}s (SLURM_CONF={cluster.slurm_conf})"
                )
        _shared["saved_conf"] = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(cluster.slurm_conf)
        _shared["cluster"] = cluster
    return _shared["cluster"]


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest):
    """A running :class:`SlurmCluster`; ``SLURM_CONF`` points at it meanwhile."""
    cluster = _start_or_skip(request)
    _shared["users"] += 1
    yield cluster
    _shared["users"] -= 1
    if _shared["users"] == 0:
        cluster.stop()
        cluster.remove()
        _shared["cluster"] = None
        if _shared["saved_conf"] is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = _shared["saved_conf"]
