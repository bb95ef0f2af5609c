"""A tiny model served by `vlmtune serve` on 127.0.0.1 (a real subprocess), once per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_model(tmp_path_factory) -> Path:
    from vlmtune.models.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("serve-models") / "tiny-llava")


@pytest.fixture(scope="session")
def server(served_model, tmp_path_factory):
    """(base_url, process) of `vlmtune serve` with a small queue, so a burst overflows it."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "vlmtune", "serve", str(served_model), "--host", "127.0.0.1",
                                 "--port", str(port), "--max-queue", "3", "--model-name", "tiny"],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
    yield url, proc
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
