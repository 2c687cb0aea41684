"""Where the lists live: the stored copies under STATE/lists and the shipped lists' directory.

Apart from ntpguard.lists (which reads, checks and compiles them) because a run with nothing
new (ntpguard.inputs) only needs the files' names to stat them, and importing the list code
costs ~10 ms of a ~0.1 s budget.
"""

from __future__ import annotations

import os
from typing import Any

BUILTIN_FILES = ("harvesters.txt", "scanners.txt")
SYSTEM_RULES_DIR = "/usr/share/ntpguard/rules"


def list_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "lists")


def builtin_dir(config: Any) -> str:
    """[lists] builtin_dir, else the source tree's rules/ (running from a checkout), else
    the packaged copy."""
    if config.lists.builtin_dir:
        return config.lists.builtin_dir
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "rules")
    if os.path.isfile(os.path.join(source_tree, BUILTIN_FILES[0])):
        return source_tree
    return SYSTEM_RULES_DIR


def builtin_paths(config: Any) -> list[str]:
    """The shipped lists in force ([lists] builtin = false: none)."""
    if not config.lists.builtin:
        return []
    directory = builtin_dir(config)
    return [os.path.join(directory, fname) for fname in BUILTIN_FILES]
