"""The page's one-digit requests run on all threads or on one, whichever a model's first requests find faster;
a grid and everything after a request keep all threads."""

import json
import warnings

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
with warnings.catch_warnings():  # starlette asks for another HTTP client; httpx is the one the test extra installs
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from mnist_diffusion.serve import ThreadChoice, create_app

LOCAL = "http://127.0.0.1:8000"  # the server answers only requests addressed to this machine


def _play(choice: ThreadChoice, seconds: dict[int, float], requests: int) -> list[int]:
    picked = []
    for _ in range(requests):
        n = choice.pick()
        picked.append(n)
        choice.record(n, seconds[n])
    return picked


@pytest.mark.parametrize(("seconds", "kept"), [({4: 0.2, 1: 0.1}, 1), ({4: 0.1, 1: 0.2}, 4)])
def test_after_a_warm_up_both_are_tried_twice_then_the_faster_is_kept(seconds, kept):
    picked = _play(ThreadChoice(4), seconds, 8)
    assert picked[:5] == [4, 4, 1, 4, 1]  # the first request warms the model up and is not counted
    assert picked[5:] == [kept] * 3 and ThreadChoice(4).decided is None


def test_one_thread_or_no_choice_means_nothing_to_try():
    assert _play(ThreadChoice(1), {1: 0.1}, 3) == [1, 1, 1]
    assert _play(ThreadChoice(8, try_one=False), {8: 0.1}, 3) == [8, 8, 8]


@pytest.fixture
def two_threads():
    """At least two intra-op threads (an earlier test may have left one), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def test_the_server_reports_the_threads_of_each_digit_and_restores_them(two_threads):
    most = two_threads
    client = TestClient(create_app(["ddpm-cond"]), base_url=LOCAL)
    used = []
    for seed in range(6):
        response = client.post("/api/generate", json={"model": "ddpm-cond", "digit": 3, "steps": 2, "seed": seed})
        done = json.loads(response.text.strip().splitlines()[-1])
        assert done["done"] and torch.get_num_threads() == most
        used.append(done["threads"])
    assert used[:5] == [most, most, 1, most, 1] and used[5] in (most, 1)
    grid = client.post("/api/grid", json={"model": "ddpm-cond", "n": 4, "steps": 2})
    assert grid.status_code == 200 and torch.get_num_threads() == most


def test_without_tuning_every_digit_takes_all_threads(two_threads):
    client = TestClient(create_app(["ddpm-cond"], tune_threads=False), base_url=LOCAL)
    for seed in range(3):
        response = client.post("/api/generate", json={"model": "ddpm-cond", "digit": 3, "steps": 2, "seed": seed})
        assert json.loads(response.text.strip().splitlines()[-1])["threads"] == two_threads
