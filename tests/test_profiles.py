"""The shipped cluster profiles: valid, and their jobs retire before the walltime kills
them (``--lifetime`` + stagger < walltime) under ``adapt``, which replaces ended jobs."""

import re

import pytest

from flows.cluster import _jobqueue_cluster, load_profile
from lambda_hat.settings import ClusterSettings


def seconds(text: str) -> int:
    """'25m' / '2h' / '00:30:00' → seconds."""
    if ":" in text:
        hours, minutes, secs = (int(part) for part in text.split(":"))
        return 3600 * hours + 60 * minutes + secs
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
@pytest.mark.parametrize("role", ["trials", "reference"])
def test_job_profiles_retire_workers_before_walltime(kind, role):
    profile = getattr(load_profile(ClusterSettings(kind=kind)), role)
    assert profile.scale.adapt is not None and profile.scale.jobs is None
    cluster = _jobqueue_cluster(kind, {**profile.cluster, "scheduler_options": {"port": 0}})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lifetime = re.search(r"--lifetime (\S+) --lifetime-stagger (\S+)", script)
    assert lifetime, script
    walltime = seconds(profile.cluster["walltime"])
    assert seconds(lifetime[1]) + seconds(lifetime[2]) < walltime


def test_local_profile_loads():
    profile = load_profile(ClusterSettings(kind="local"))
    assert profile.trials.cluster["n_workers"] >= 1
