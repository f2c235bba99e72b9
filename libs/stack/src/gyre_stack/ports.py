"""Small network helpers shared by the launchers and the tests."""

from __future__ import annotations

import socket
import time

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    """Block until host:port accepts connections; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not accept connections on {host}:{port} within {timeout:.0f}s")


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or one of its children) listens on TCP ``port``."""
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
        return any(conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
                   for member in family for conn in member.net_connections(kind="tcp"))
    except psutil.Error:
        return False
