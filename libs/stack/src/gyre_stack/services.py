"""Which services the stack runs, on which ports, with which environment."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from gyre_common.service import ServiceSpec, discover_services
from gyre_common.settings import DatabaseSettings, KafkaSettings, load_settings
from gyre_stack.errors import StackError
from gyre_stack.ports import free_port

# Addresses a server binds to mean "every interface"; clients reach them over loopback.
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def load_extra_service(ref: str) -> ServiceSpec:
    """Import the ``ServiceSpec`` named by ``module:ATTRIBUTE`` (the current directory is importable).

    Raises:
        StackError: the reference is malformed, cannot be imported or is not a ServiceSpec.
    """
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise StackError(f"extra service {ref!r} must look like 'package.module:ATTRIBUTE'")
    # `python -m` puts the current directory on sys.path for the services; do the same here so a
    # spec and the module it runs resolve alike.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        spec = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise StackError(f"cannot load extra service {ref!r}: {exc}") from exc
    if not isinstance(spec, ServiceSpec):
        raise StackError(f"extra service {ref!r} is a {type(spec).__name__}, not a ServiceSpec")
    return spec


def all_services(extra_refs: list[str], selection: set[str] | None = None) -> list[ServiceSpec]:
    """Installed services (entry-point group ``gyre.services``) plus the extra ones, by name.

    Args:
        extra_refs: ``module:ATTRIBUTE`` references of extra specs, always included.
        selection: names of the installed services to keep; None keeps them all.

    Raises:
        StackError: an installed service cannot be loaded, a selected name is not installed, or two
            services share a name.
    """
    try:
        # "none" must work even when an installed service is broken: do not even load them.
        installed = [] if selection == set() else list(discover_services())
    except Exception as exc:  # an entry point's import can fail in any way; show it, do not crash
        raise StackError(f"an installed service (entry-point group gyre.services) cannot be loaded: "
                         f"{type(exc).__name__}: {exc}. Reinstall it (make install) or fix it; "
                         f"GYRE_STACK_SERVICES=none starts the stack without services.") from exc
    if selection is not None:
        unknown = selection - {spec.name for spec in installed}
        if unknown:
            known = ", ".join(spec.name for spec in installed) or "none"
            raise StackError(f"GYRE_STACK_SERVICES names {', '.join(sorted(unknown))}, which is not "
                             f"installed (installed: {known})")
        installed = [spec for spec in installed if spec.name in selection]
    specs = installed + [load_extra_service(ref) for ref in extra_refs]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise StackError(f"more than one service is named {', '.join(duplicates)}")
    return sorted(specs, key=lambda spec: spec.name)


@dataclass(frozen=True)
class ServicePlan:
    """How one service will be started.

    Attributes:
        spec: the service.
        http_host: address its HTTP clients use (loopback when it binds every interface).
        http_port: its HTTP port (REST, ``/readyz``).
        grpc_host: address its gRPC clients use.
        grpc_port: its gRPC port.
        env_overrides: variables set for it on top of the caller's environment.
    """

    spec: ServiceSpec
    http_host: str
    http_port: int
    grpc_host: str
    grpc_port: int
    env_overrides: dict[str, str]

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def ready_url(self) -> str:
        return f"{self.http_url}/readyz"


def client_host(bind_host: str) -> str:
    """The address a local client uses for a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in _WILDCARD_HOSTS else bind_host


def plan_service(spec: ServiceSpec, bootstrap_servers: str, database_url: str) -> ServicePlan:
    """Decide the ports and environment of ``spec``.

    Ports come from the service's own settings (its defaults, or ``GYRE_<NAME>_HTTP_PORT`` /
    ``_GRPC_PORT`` in this process's environment, which the service inherits); a port left at 0
    gets a free one, passed on by environment so the service binds exactly the port `up` waits on.

    Raises:
        SettingsError: the service's settings are invalid in this environment.
    """
    settings_cls = spec.settings
    settings = load_settings(settings_cls)
    overrides = {
        KafkaSettings.env_name("bootstrap_servers"): bootstrap_servers,
        DatabaseSettings.env_name("url"): database_url,
        # Without it a service's output reaches its log file only when a buffer fills.
        "PYTHONUNBUFFERED": "1",
    }
    http_port, grpc_port = settings.http_port, settings.grpc_port
    if http_port == 0:
        http_port = free_port()
        overrides[settings_cls.env_name("http_port")] = str(http_port)
    if grpc_port == 0:
        grpc_port = free_port()
        overrides[settings_cls.env_name("grpc_port")] = str(grpc_port)
    # Older settings classes have no grpc_host: their gRPC server binds where HTTP does.
    grpc_bind = getattr(settings, "grpc_host", settings.http_host)
    return ServicePlan(spec, client_host(settings.http_host), http_port, client_host(grpc_bind), grpc_port,
                       overrides)
