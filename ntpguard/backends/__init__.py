"""Firewall backends: nftables (default) and legacy ip6tables via python-iptables.

Each backend has `apply(plan)`, `dry_run(plan)`, `show()` and `remove()`; `get()` picks one the
way sshuttle's `get_auto_method()` does: by probing what this host runs.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any, Optional

from ntpguard.errors import FirewallError

NAMES = ("nft", "iptables")


def iptables_is_legacy() -> bool:
    """True where `iptables` is the legacy x_tables variant, the only one python-iptables drives."""
    if not shutil.which("iptables"):
        return False
    try:
        out = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "(legacy)" in out


def auto_name() -> str:
    """iptables only where the host's iptables is legacy; nft everywhere else."""
    return "iptables" if iptables_is_legacy() else "nft"


def get(name: str, cache_dir: Optional[str] = None) -> Any:
    """A backend by name ("auto", "nft", "iptables"); FirewallError if it cannot work here."""
    if name == "auto":
        name = auto_name()
    if name == "nft":
        from ntpguard.backends.nft import NftBackend

        return NftBackend(cache_dir)
    if name == "iptables":
        from ntpguard.backends.iptables import IptablesBackend

        return IptablesBackend()
    raise FirewallError(f"unknown firewall backend {name!r} (one of auto, {', '.join(NAMES)})")


def dry_run(name: str, plan: Any) -> str:
    """The exact ruleset a backend would write, without touching (or even probing) netfilter."""
    if name == "auto":
        name = auto_name()
    if name == "nft":
        from ntpguard.backends import nft

        return nft.render(plan).full_text(0)
    if name == "iptables":
        from ntpguard.backends import iptables

        return iptables.render(plan).text()
    raise FirewallError(f"unknown firewall backend {name!r} (one of auto, {', '.join(NAMES)})")
