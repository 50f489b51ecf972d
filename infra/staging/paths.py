"""Where staging keeps each host's rendered configuration, data, pid files and logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.staging.inventory import Host


@dataclass(frozen=True)
class Paths:
    """Staging's folders under one root (``var/staging``)."""

    root: Path

    @property
    def secrets(self) -> Path:
        """Return where staging's CA, certificates and passwords live (``secrets.py``)."""
        return self.root / "secrets"

    @property
    def inventory_file(self) -> Path:
        return self.root / "inventory.json"

    def etc(self, host: Host) -> Path:
        """Return the host's rendered configuration files (what real hosts get in /etc)."""
        return self.root / "etc" / host.name

    def data(self, host: Host) -> Path:
        """Return the host's data, pid files and logs."""
        return self.root / "hosts" / host.name

    def mail(self, host: Host) -> Path:
        """Return where an API host's mail backend writes (one ``.eml`` per mail)."""
        return self.data(host) / "mail"

    def textfiles(self, host: Host) -> Path:
        """Return where a host's programs leave metrics for its node exporter (``*.prom``)."""
        return self.data(host) / "textfiles"

    def etcd_data(self, host: Host) -> Path:
        return self.data(host) / "etcd" / "data"

    def stats_socket(self, host: Host) -> Path:
        """HAProxy's stats socket on ``host``, beside the hosts' folders: a unix socket path
        may not be longer than 107 bytes."""
        return self.root / "hosts" / f"haproxy-{host.name}.sock"
