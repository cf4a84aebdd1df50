"""The page's server over real HTTP (uvicorn on 127.0.0.1, a free port), with a tiny untrained model in a run
directory: a slow grid and abandoned streams leave the page answering, the work of a client that has gone is
cancelled, other sites and other hosts are refused, a huge body is refused before it is sent, and every error is
one sentence of JSON."""

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")
import uvicorn  # noqa: E402

from mnist_diffusion.serve import MAX_SEED, Limits, create_app  # noqa: E402

HTML_NAME = '<img src=x onerror="window.pwned=1">'  # a legal directory name on Linux and macOS


@pytest.fixture
def one_thread():
    """The server's sampling on one intra-op thread: steady timings on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_dir(tmp_path, tiny_guided_pipeline):
    """A tiny guided model saved as a run directory whose name holds HTML."""
    path = tmp_path / HTML_NAME
    tiny_guided_pipeline().save(path)
    return str(path)


@contextlib.contextmanager
def running(app):
    """The app served by uvicorn on 127.0.0.1 in a thread of this process; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(run_dir, one_thread):
    """(base URL, app, model name) of a server over the tiny model; more requests may wait than by default, so
    that 20 streams at once are all taken."""
    app = create_app([run_dir], limits=Limits(waiting=32))
    with running(app) as url:
        yield url, app, run_dir


def _until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _page_seconds(url: str) -> float:
    start = time.perf_counter()
    response = httpx.get(url + "/", timeout=30)
    assert response.status_code == 200 and "mnist-diffusion" in response.text
    return time.perf_counter() - start


def _send(url: str, path: str, body: dict) -> socket.socket:
    """A socket that has sent a JSON POST to `path`; the caller reads what it needs, then drops it."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return s


def _drop(sockets: list[socket.socket]) -> None:
    """The clients go away without reading on."""
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


def test_a_slow_grid_leaves_the_page_answering_and_stops_when_its_client_goes(served):
    url, app, model = served
    work = app.state.work
    assert _page_seconds(url) < 5  # the first request also starts the connection machinery
    # 400 digits x 20 guided steps: seconds of work on one thread, far longer than the test waits below
    grid = _send(url, "/api/grid", {"model": model, "n": 400, "steps": 20, "sampler": "dpmpp_2m", "seed": 1})
    try:
        assert _until(lambda: work.running is not None, 30)
        time.sleep(0.3)  # into the sampling
        seconds = [_page_seconds(url) for _ in range(5)]
        assert work.running is not None, "the grid finished before the page was asked for: the test proves nothing"
        assert max(seconds) < 1, seconds
    finally:
        _drop([grid])  # its client goes: the grid stops at its next sampler step
    assert _until(lambda: work.active == 0, 5), "the grid of a client that has gone went on"


def test_twenty_abandoned_streams_are_cancelled_and_the_page_keeps_answering(served):
    url, app, model = served
    work = app.state.work
    streams = []
    try:
        for seed in range(20):  # each seconds of Heun steps, queued one after another
            streams.append(
                _send(url, "/api/generate", {"model": model, "digit": 3, "steps": 200, "sampler": "heun", "seed": seed})
            )
            assert streams[-1].recv(64).startswith(b"HTTP/1.1 200")
        assert work.active == 20 and _until(lambda: work.running is not None, 30)
        seconds = [_page_seconds(url) for _ in range(3)]
        assert max(seconds) < 1, seconds
    finally:
        _drop(streams)
    # the waiting ones never start and the running one stops at its next step: not 20 x 200 Heun steps
    assert _until(lambda: work.active == 0, 5), f"{work.active} requests still at work"
    assert _page_seconds(url) < 1
    assert torch.get_num_threads() == 1  # the one-digit thread choice was put back


def test_past_the_queue_bound_the_answer_is_busy_in_one_sentence(run_dir, one_thread):
    app = create_app([run_dir], limits=Limits(waiting=0))
    with running(app) as url, httpx.Client(timeout=60) as first:
        body = {"model": run_dir, "digit": 3, "steps": 200, "sampler": "heun"}
        with first.stream("POST", url + "/api/generate", json=body) as stream:
            lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)
            busy = httpx.post(url + "/api/generate", json=body, timeout=30)
            assert busy.status_code == 503 and busy.headers["retry-after"]
            assert busy.json()["error"].startswith("the server is busy")
        assert _until(lambda: app.state.work.active == 0, 5)
        again = httpx.post(url + "/api/generate", json={**body, "steps": 2}, timeout=60)
        assert json.loads(again.text.splitlines()[-1])["done"]


def test_a_request_past_its_time_budget_stops_with_a_sentence(run_dir, one_thread):
    app = create_app([run_dir], limits=Limits(seconds=0.2))
    with running(app) as url:
        grid = httpx.post(url + "/api/grid", json={"model": run_dir, "n": 400, "steps": 20}, timeout=60)
        assert grid.status_code == 503 and "time budget of 0.2 s" in grid.json()["error"]
        stream = httpx.post(url + "/api/generate", json={"model": run_dir, "steps": 200, "sampler": "heun"}, timeout=60)
        assert "time budget" in json.loads(stream.text.splitlines()[-1])["error"]


def test_other_sites_and_other_hosts_are_refused_before_any_work(served):
    url, app, model = served
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"model": model, "n": 4, "steps": 2})
    json_type = {"content-type": "application/json"}
    refused = {  # case: headers
        # a page on another local port posts a form: a text/plain body needs no preflight
        "form": {"content-type": "text/plain", "origin": f"http://127.0.0.1:{port + 1}"},
        "form, no origin": {"content-type": "application/x-www-form-urlencoded"},
        "other origin": {**json_type, "origin": "http://evil.example"},
        "null origin": {**json_type, "origin": "null"},
        "rebound host": {**json_type, "host": f"evil.example:{port}"},
        "other port": {**json_type, "host": f"localhost:{port + 1}"},
    }
    for case, headers in refused.items():
        response = httpx.post(url + "/api/grid", content=body, headers=headers, timeout=30)
        assert response.status_code in (403, 415), case
        error = response.json()["error"]
        assert error.endswith(".") and error.count(". ") == 0, (case, error)
    page = httpx.get(url + "/", headers={"host": f"evil.example:{port}"}, timeout=30)
    assert page.status_code == 403  # the page is not read through a rebound name either
    assert app.state.models.loaded == {}  # not even the model was loaded
    for host in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.1:{port}"):
        assert httpx.get(url + "/", headers={"host": host}, timeout=30).status_code == 200
    same_site = httpx.post(
        url + "/api/grid",
        content=body,
        timeout=60,
        headers={"content-type": "application/json; charset=utf-8", "origin": url},
    )
    assert same_site.status_code == 200 and same_site.headers["content-type"] == "image/png"


def test_a_body_that_is_not_a_json_object_is_refused(served):
    url, _, _ = served
    for content in (b"model=x", b"[1, 2]", b"\xff\xfe", b"[" * 30_000 + b"]" * 30_000, b""):
        response = httpx.post(
            url + "/api/generate", content=content, timeout=30, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400 and response.json() == {"error": "the request must be a JSON object."}


def _raw(url: str, head: str, body: bytes = b"", wait: float = 10) -> bytes:
    """Send the request head and `body` on a socket; what the server answers before `wait` seconds pass."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    return answer


def test_a_huge_body_is_refused_before_it_is_sent(served):
    url, app, _ = served
    host = url.removeprefix("http://")
    head = f"POST /api/grid HTTP/1.1\nHost: {host}\nContent-Type: application/json\nContent-Length: {50 * 2**20}\n"
    start = time.perf_counter()
    answer = _raw(url, head)  # the head only: none of the 50 MB is ever sent
    assert time.perf_counter() - start < 5
    status, _, text = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413") and b"connection: close" in status.lower()
    assert json.loads(text)["error"] == f"the request body is {50 * 2**20:,} bytes; this server takes at most 65,536."
    # without a length, a chunked body is read only up to the limit
    head = f"POST /api/grid HTTP/1.1\nHost: {host}\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    answer = _raw(url, head, chunk * 2)
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than this server takes" in answer
    assert app.state.work.active == 0 and _page_seconds(url) < 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"seed": MAX_SEED + 1}, f"seed must be a whole number from 0 to {MAX_SEED}"),
        ({"seed": True}, "seed must be a whole number"),
        ({"n": True}, "n must be a whole number from 1 to 400"),
        ({"guidance": 1e308}, "guidance must be a number from 0 to 20"),
        ({"steps": 200, "n": 400}, "this request asks for 160,000 network evaluations (400 digits x 400 each"),
        ({"model": "x" * 60_000}, "unknown model 'xxxxxxxx"),
    ],
)
def test_bad_values_are_one_sentence_and_short(served, change, error):
    url, _, model = served
    response = httpx.post(url + "/api/grid", json={"model": model, "n": 4, "steps": 2, **change}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error) and len(response.text) < 600


def test_unknown_routes_and_methods_answer_json(served):
    url, _, _ = served
    assert httpx.get(url + "/nowhere", timeout=30).json() == {"error": "GET /nowhere: not found."}
    assert httpx.get(url + "/api/grid", timeout=30).json() == {"error": "GET /api/grid: method not allowed."}


def test_model_names_reach_the_page_as_text(served):
    url, _, model = served
    page = httpx.get(url + "/", timeout=30)
    policy = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "innerHTML" not in page.text and "outerHTML" not in page.text and "insertAdjacentHTML" not in page.text
    assert httpx.get(url + "/api/models", timeout=30).json()[0]["name"] == model
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium, or set $CHROMIUM)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        assert page.eval_on_selector("#model option", "(o) => o.textContent") == model
        assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
        assert page.evaluate("window.pwned") is None
        browser.close()


@pytest.mark.parametrize(
    ("host", "warned"),
    [("0.0.0.0", True), ("192.168.1.5", True), ("127.0.0.1", False), ("localhost", False), ("::1", False)],
)
def test_listening_beyond_this_machine_is_named_in_a_warning(monkeypatch, capsys, host, warned):
    import mnist_diffusion.serve as serve_module
    from mnist_diffusion.cli import main

    calls = []
    monkeypatch.setattr(serve_module, "serve", lambda *args: calls.append(args))
    assert main(["serve", "--host", host, "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert calls and calls[0][1] == host
    assert (
        f"warning: --host {host} lets every machine that can reach this one on port 8123 use the page" in err
    ) == warned


@pytest.mark.parametrize(
    ("bind", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "[::1]:8000", True),
        ("127.0.0.1", "LOCALHOST:8000", True),
        ("127.0.0.1", "192.168.1.5:8000", False),
        ("127.0.0.1", "evil.example:8000", False),
        ("127.0.0.1", "127.0.0.1:8001", False),
        ("127.0.0.1", "127.0.0.1", False),
        ("127.0.0.1", "", False),
        ("127.0.0.1", "127.0.0.1:80x", False),
        ("127.0.0.1", "[::1", False),
        ("192.168.1.5", "192.168.1.5:8000", True),
        ("192.168.1.5", "10.0.0.2:8000", False),
        ("0.0.0.0", "10.0.0.2:8000", True),
        ("0.0.0.0", "[fe80::1]:8000", True),
        ("0.0.0.0", "evil.example:8000", False),
    ],
)
def test_the_hosts_a_request_may_name(bind, host, allowed):
    from mnist_diffusion.serve.guard import Hosts, split_host

    parsed = split_host(host)
    assert (parsed is not None and Hosts(bind).allows(parsed[0]) and parsed[1] == 8000) == allowed


def test_a_failure_inside_the_server_is_still_one_sentence_of_json(served, monkeypatch):
    url, app, model = served

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.models, "describe", boom)
    failed = httpx.get(url + "/api/models", timeout=30)
    assert failed.status_code == 500
    assert failed.json() == {"error": "the server failed (RuntimeError); its log says more."}
    monkeypatch.setattr(app.state.models.get(model), "sample", boom)
    stream = httpx.post(url + "/api/generate", json={"model": model, "steps": 2}, timeout=30)
    assert json.loads(stream.text.splitlines()[-1]) == {"error": "the model failed (RuntimeError: boom)."}
