"""Objects the tests build, always through the services so that the invariants hold."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from servers import services
from servers.models import VirtualServer
from tests.helpers import free_port

_counter = 0


def make_server(*, name: str | None = None, domain: str | None = None, port: int | None = None,
                ip_address: str = "127.0.0.1", home_dir: Path | None = None, start: bool = False,
                **kwargs) -> VirtualServer:
    """A virtual server on loopback with a fresh port and home directory (stopped unless asked)."""
    global _counter
    _counter += 1
    name = name or f"server-{_counter}"
    return services.create_virtual_server(
        name=name,
        default_domain=domain or f"d{_counter}.example.test",
        ip_address=ip_address,
        port=port or free_port(),
        home_dir=home_dir or settings.VAR_DIR / "homes" / f"{name}-{_counter}",
        start=start,
        **kwargs,
    )
