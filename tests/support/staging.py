"""Whether staging can run here: root, `ip netns`, and no other staging up on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess

from infra.staging import network
from infra.staging.inventory import BRIDGE


def why_not_staging() -> str | None:
    if os.geteuid() != 0:
        return "staging needs root (network namespaces)"
    if (
        shutil.which("ip") is None
        or subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).returncode
    ):
        return "staging needs `ip netns` (iproute2)"
    if network.namespaces() or network.link_exists(BRIDGE):
        return "a staging is already up on this machine; `gridlink staging down` first"
    return None
