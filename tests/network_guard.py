"""A pytest plugin that keeps the test suite offline (registered from tests/conftest.py).

From pytest_configure on (so collection-time imports are covered too), connecting a socket to
anything but loopback or a Unix socket raises NetworkBlocked, and so does resolving a host name
that is not local. Every attempt is also recorded and fails the test that made it, so a library
that swallows the error (and falls back quietly) still fails the test.

Left out on purpose: subprocesses (the CLI sets HF_HUB_OFFLINE itself; see test_offline.py) and
raw sendto() on unconnected UDP sockets.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

attempts: list[str] = []  # "host:port" of every blocked attempt since the current test started
_originals: dict[str, object] = {}


class NetworkBlocked(OSError):
    """Raised instead of opening a network connection during the tests."""


def is_local(host) -> bool:
    if host is None or host in ("", b""):
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0].lower()
    if host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _block(host, port) -> None:
    where = f"{host}:{port}"
    attempts.append(where)
    raise NetworkBlocked(f"network access blocked during tests: {where} (only loopback is allowed)")


def _check_address(sock: socket.socket, address) -> None:
    if getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX:
        return
    if isinstance(address, tuple) and address and not is_local(address[0]):
        _block(address[0], address[1] if len(address) > 1 else "?")


def _connect(self, address):
    _check_address(self, address)
    return _originals["connect"](self, address)


def _connect_ex(self, address):
    _check_address(self, address)
    return _originals["connect_ex"](self, address)


def _create_connection(address, *args, **kwargs):
    if not is_local(address[0]):
        _block(address[0], address[1])
    return _originals["create_connection"](address, *args, **kwargs)


def _getaddrinfo(host, port, *args, **kwargs):
    if not is_local(host):
        _block(host, port)
    return _originals["getaddrinfo"](host, port, *args, **kwargs)


def install() -> None:
    if _originals:
        return
    _originals.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex,
                      create_connection=socket.create_connection, getaddrinfo=socket.getaddrinfo)
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.create_connection = _create_connection
    socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    if not _originals:
        return
    socket.socket.connect = _originals["connect"]
    socket.socket.connect_ex = _originals["connect_ex"]
    socket.create_connection = _originals["create_connection"]
    socket.getaddrinfo = _originals["getaddrinfo"]
    _originals.clear()


def pytest_configure(config) -> None:
    install()


def pytest_unconfigure(config) -> None:
    uninstall()


def _fail_if_attempted(phase: str) -> None:
    if attempts:
        tried = ", ".join(attempts)
        attempts.clear()
        pytest.fail(f"the test tried to open a network connection ({phase}): {tried}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    attempts.clear()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail the test if it (or a library under it) tried to reach the network, even if it caught the error."""
    result = yield
    _fail_if_attempted("setup or call")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    _fail_if_attempted("teardown")
    return result
