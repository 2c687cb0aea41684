"""Helpers shared by the lab end-to-end tests."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from typing import Iterator

from lab.world import World


@contextlib.contextmanager
def explained(world: World) -> Iterator[None]:
    """Print the world's logs if the block fails (pytest shows captured stdout on failure)."""
    try:
        yield
    except BaseException:
        print(world.dump_logs())
        raise


def wait_for(pred, timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def canon(a: str) -> str:
    return str(ipaddress.ip_address(a))
