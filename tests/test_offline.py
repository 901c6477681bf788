"""Offline: the network guard really fires, and importing rag switches Hugging Face libraries offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import network_guard
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def test_guard_is_installed_and_blocks_a_remote_connect():
    assert socket.socket.connect is network_guard._connect
    for attempt in (lambda: socket.create_connection(("192.0.2.1", 80), timeout=0.5),
                    lambda: socket.socket().connect(("203.0.113.9", 443)),
                    lambda: socket.socket().connect_ex(("198.51.100.7", 53)),
                    lambda: socket.getaddrinfo("huggingface.co", 443)):
        with pytest.raises(network_guard.NetworkBlocked, match="network access blocked"):
            attempt()
    assert len(network_guard.attempts) == 4
    network_guard.attempts.clear()  # this test meant to trip it; do not fail it at teardown


def test_guard_allows_loopback_and_unix_sockets(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname(), timeout=2):
        pass
    if hasattr(socket, "AF_UNIX"):
        path = str(tmp_path / "s")
        with socket.socket(socket.AF_UNIX) as unix_server, socket.socket(socket.AF_UNIX) as client:
            unix_server.bind(path)
            unix_server.listen(1)
            client.connect(path)
    assert network_guard.attempts == []


def test_a_test_that_swallows_the_error_still_fails(tmp_path):
    """Run an inner pytest whose test catches the OSError, as an HTTP library would: it must fail."""
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent("""
        import socket

        def test_swallows():
            try:
                socket.create_connection(("192.0.2.1", 80), timeout=0.5)
            except OSError:
                pass

        def test_local_only():
            assert socket.getaddrinfo("localhost", 80)
    """))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "network_guard", "-q", "-p", "no:cacheprovider",
                             str(inner)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tried to open a network connection (setup or call): 192.0.2.1:80" in result.stdout
    assert "1 failed, 1 passed" in result.stdout


def test_importing_rag_sets_hf_offline_before_hf_libraries_load():
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS + ("HF_DATASETS_OFFLINE",)}
    script = textwrap.dedent("""
        import json, os, sys
        import rag
        before = [m for m in sys.modules if m.startswith(("huggingface_hub", "transformers", "sentence_transformers"))]
        from huggingface_hub import constants
        print(json.dumps({"env": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")},
                          "hub_offline": constants.HF_HUB_OFFLINE, "loaded_before": before}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["env"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert report["hub_offline"] is True
    assert report["loaded_before"] == [], "rag imported a Hugging Face library before setting the variables"

