"""Firewall backends: nftables (default) and legacy ip6tables via python-iptables.

Every backend has the same shape (`Backend`): `is_supported()` says whether it can work on
this host, `render(plan)` the exact ruleset without touching netfilter, `apply(plan)` makes
the kernel match the plan all or nothing, `verify(plan)` whether the kernel still holds it
(`Check`), `show()` what is in place, `remove()` takes it all away; apply and remove answer
with one `Result`. `get()` picks one the way sshuttle's
`get_auto_method()` does: by probing what this host runs. A new backend is one module here
and one line in `REGISTRY`.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import field
from typing import TYPE_CHECKING, Optional, Protocol

from ntpguard import commands
from ntpguard.errors import FirewallError, NtpguardError
from ntpguard.records import record

if TYPE_CHECKING:  # annotations only: a run with nothing to do imports no plan code
    from ntpguard.plan import Plan

# name -> "module:class", imported only when used (python-iptables runs ldconfig and modprobe
# on import, ~0.35 s, which an nft host never needs).
REGISTRY = {
    "nft": "ntpguard.backends.nft:NftBackend",
    "iptables": "ntpguard.backends.iptables:IptablesBackend",
}
NAMES = tuple(REGISTRY)


@record
class Result:
    """What an apply or remove did."""

    backend: str
    action: str  # created | replaced | updated | unchanged | removed | absent
    seconds: float = 0.0
    added: int = 0
    deleted: int = 0
    detail: str = ""
    # The backend knows the kernel holds exactly the plan now (nft: the generation after its
    # own transaction, or unchanged since it); then nobody needs to verify it.
    exact: bool = field(default=False, compare=False)
    # The kernel's nftables generation at which it held exactly the plan (an exact result of
    # the nft backend), for ntpguard.inputs; None when not known.
    generation: Optional[int] = field(default=None, compare=False)

    def describe(self) -> str:
        b = self.backend
        if self.action == "updated":
            return f"{b}: updated in place (+{self.added} -{self.deleted}) in {self.seconds:.3f} s"
        if self.action in ("created", "replaced"):
            return f"{b}: {self.detail or 'rules'} {self.action} in {self.seconds:.3f} s"
        if self.action == "unchanged":
            return f"{b}: rules already as planned, nothing changed"
        if self.action == "removed":
            return f"{b}: {self.detail or 'rules'} removed"
        return f"{b}: no ntpguard rules in place; nothing to remove"

    def as_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "action": self.action,
                "seconds": round(self.seconds, 3), "added": self.added,
                "deleted": self.deleted, "message": self.describe()}


# What verify() finds: the plan's rules as applied, none of ntpguard's rules, or some that differ.
IN_PLACE, MISSING, DRIFTED = "in place", "missing", "drifted"


@record
class Check:
    """Whether the kernel holds a plan's rules; `detail` says what differs, in one line."""

    state: str  # IN_PLACE | MISSING | DRIFTED
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == IN_PLACE


class Backend(Protocol):
    name: str

    def __init__(self, cache_dir: Optional[str] = None) -> None: ...

    @classmethod
    def is_supported(cls) -> bool: ...

    @staticmethod
    def render(plan: Plan) -> str: ...

    def apply(self, plan: Plan, replace: bool = False) -> Result:
        """replace=True: rewrite everything, even where a cache says the kernel holds it."""
        ...

    def verify(self, plan: Plan) -> Check: ...

    def show(self, full: bool = False) -> str: ...

    def remove(self) -> Result: ...


# What Debian's `iptables` alternative resolves to (iptables >= 1.8 is one multi-call program
# per variant, linked as iptables-legacy or iptables-nft): legacy or not, without a process.
_VARIANTS = {"xtables-legacy-multi": True, "xtables-nft-multi": False}


def iptables_is_legacy() -> bool:
    """True where `iptables` is the legacy x_tables variant, the only one python-iptables drives.
    Told by where the link on $PATH ends (update-alternatives --set iptables ...: a few
    stat calls, so the long-running watcher sees a switch), by running `iptables --version`
    only when it ends elsewhere, once a process per program (a `rules apply` with canaries
    asks three times, and the process was ~3 ms each)."""
    found = commands.which("iptables")
    if found is None:
        return False
    program = os.path.realpath(found)
    known = _VARIANTS.get(os.path.basename(program))
    return known if known is not None else _says_legacy(found, program)


@functools.cache
def _says_legacy(found: str, program: str) -> bool:
    """`iptables --version`, run by the name on $PATH (a multi-call program reads its name),
    remembered for that name and the program it ends at."""
    try:
        out = commands.run([found, "--version"], check=False, seconds=10).stdout
    except NtpguardError:
        return False
    return "(legacy)" in out


def auto_name() -> str:
    """iptables only where the host's iptables is legacy; nft everywhere else."""
    return "iptables" if iptables_is_legacy() else "nft"


def backend_class(name: str) -> type[Backend]:
    """The class of a backend by name ("auto" probes); FirewallError for an unknown name."""
    if name == "auto":
        name = auto_name()
    target = REGISTRY.get(name)
    if target is None:
        raise FirewallError(f"unknown firewall backend {name!r} (one of auto, {', '.join(NAMES)})")
    module, _, cls = target.partition(":")
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found


def get(name: str, cache_dir: Optional[str] = None) -> Backend:
    """A backend instance by name; FirewallError if it cannot work here."""
    return backend_class(name)(cache_dir)


def render(name: str, plan: Plan) -> str:
    """The exact ruleset a backend would write, without touching (or even probing) netfilter."""
    return backend_class(name).render(plan)
