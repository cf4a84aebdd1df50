"""How the package sets OpenMP's waiting before torch loads: a short spin on a quiet machine, sleep at once beside
busy neighbours; what the user exported wins."""

import os
import subprocess
import sys

import pytest

from mnist_diffusion.openmp import SPIN_COUNT, openmp_waiting, runnable_threads, set_waiting

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.parametrize(
    ("environ", "runnable", "expected"),
    [
        ({}, [1, 1, 1], {**PASSIVE, "GOMP_SPINCOUNT": SPIN_COUNT}),  # only this thread runnable: spin, then sleep
        ({}, [1, 2, 1], PASSIVE),  # a busy neighbour in any reading: sleep at once
        ({}, [3, 3, 3], PASSIVE),
        ({}, None, PASSIVE),  # no /proc/loadavg (not Linux): sleep at once
        ({"GOMP_SPINCOUNT": "0"}, [1, 1], PASSIVE),  # the user's spin count stays as it is
        ({"OMP_WAIT_POLICY": "ACTIVE"}, [1, 1], {}),  # the user's policy: nothing added
        ({"OMP_WAIT_POLICY": "PASSIVE"}, [1, 1], {}),
    ],
)
def test_openmp_waiting_spins_only_on_a_quiet_machine_and_never_overrides_the_user(environ, runnable, expected):
    assert openmp_waiting(environ, runnable) == expected


def test_set_waiting_adds_to_the_environment_it_is_given():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert set_waiting(environ) == {} and environ == {"OMP_WAIT_POLICY": "ACTIVE"}
    environ = {}
    added = set_waiting(environ)
    assert environ == added and added["OMP_WAIT_POLICY"] == "PASSIVE"


def test_runnable_threads_counts_at_least_this_one():
    counts = runnable_threads(readings=2, gap_s=0)
    if counts is None:
        pytest.skip("no /proc/loadavg here")
    assert len(counts) == 2 and min(counts) >= 1


PRINT = "import os, mnist_diffusion; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"


@pytest.mark.parametrize(
    ("exported", "expected"),
    [
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {("ACTIVE", "None")}),
        ({"GOMP_SPINCOUNT": "0"}, {("PASSIVE", "0")}),
        ({}, {("PASSIVE", "None"), ("PASSIVE", SPIN_COUNT)}),  # which one depends on what else runs right now
    ],
)
def test_importing_the_package_sets_the_waiting_before_torch_loads(exported, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", PRINT], env={**env, **exported}, capture_output=True, text=True, check=True
    )
    assert tuple(out.stdout.split()) in expected
