"""Does the kernel's `table inet ntpguard` still hold what a plan renders? (pure)

Both sides are reduced to one `Shape`: each chain's hook, priority, policy and number of
rules, each set's elements. The expected side comes from the skeleton text ntpguard renders,
the kernel's from `nft -j list table`. Rules are counted, not compared word by word: nft
prints a rule back in its own spelling (`& mask == @set`, `counter packets 0 bytes 0`,
`icmpx admin-prohibited`), which changes between nft versions, while a deleted, added or
flushed rule, a chain moved to another priority and a set that lost elements all change the
shape. Whatever else another tool does to the table, the watcher sees it happen (`nft
monitor`) and puts the table back whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import field
from typing import Any, Mapping, Optional, Sequence

from ntpguard.records import record

# Named base-chain priorities of the ip, ip6 and inet families (nft(8), "CHAINS").
NAMED_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                    "srcnat": 100}


@record(frozen=False)
class ChainShape:
    """What verify compares of one chain: its hook, priority, policy and rule count."""

    hook: Optional[str] = None
    priority: Optional[int] = None  # None: base chain whose priority could not be read
    policy: Optional[str] = None
    rules: int = 0


@record(frozen=False)
class Shape:
    """What verify compares of a table: its chains' shapes and its sets' elements."""

    chains: dict[str, ChainShape] = field(default_factory=dict)
    sets: dict[str, list[Any]] = field(default_factory=dict)


def priority_value(text: str) -> Optional[int]:
    """`filter - 10` → -10, `srcnat` → 100, `-5` → -5; None for what this does not know."""
    m = re.fullmatch(r"\s*([a-z]+|-?\d+)\s*(?:([+-])\s*(\d+))?\s*", text)
    if not m:
        return None
    base = m.group(1)
    value = NAMED_PRIORITIES.get(base) if base.isalpha() else int(base)
    if value is None:
        return None
    if m.group(2):
        value += int(m.group(3)) * (1 if m.group(2) == "+" else -1)
    return value


def from_skeleton(skeleton: str) -> Shape:
    """The shape of a rendered table: `set`/`map` and `chain` blocks one level in."""
    shape = Shape()
    depth, chain, block = 0, "", ""
    for raw in skeleton.splitlines():
        line = raw.strip()
        if not line:
            continue
        if depth == 1 and line.endswith("{"):
            block, _, rest = line.partition(" ")
            name = rest[:-1].strip()
            if block == "chain":
                chain = name
                shape.chains[chain] = ChainShape()
            elif block in ("set", "map"):
                shape.sets[name] = []
        elif depth == 2 and block == "chain" and line != "}":
            if line.startswith("type ") and " hook " in line:
                c = shape.chains[chain]
                hook = re.search(r"\bhook (\w+)", line)
                prio = re.search(r"\bpriority ([^;]+);", line)
                policy = re.search(r"\bpolicy (\w+);", line)
                c.hook = hook.group(1) if hook else None
                c.priority = priority_value(prio.group(1)) if prio else None
                c.policy = policy.group(1) if policy else "accept"
            else:
                shape.chains[chain].rules += 1
        depth += line.count("{") - line.count("}")
    return shape


def from_listing(listing: str) -> Shape:
    """The shape of `nft -j list table` output."""
    shape = Shape()
    for item in json.loads(listing).get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            shape.chains[c["name"]] = ChainShape(
                c.get("hook"), c.get("prio") if "hook" in c else None,
                c.get("policy") if "hook" in c else None)
        elif "rule" in item:
            chain = shape.chains.setdefault(item["rule"]["chain"], ChainShape())
            chain.rules += 1
        else:
            for kind in ("set", "map"):
                if kind in item:
                    shape.sets[item[kind]["name"]] = list(item[kind].get("elem", []))
    return shape


def compare(skeleton: str, elements: Mapping[str, Sequence[str]], listing: str) -> str:
    """'' when the listed table has the rendered shape and the given elements (sets missing
    from `elements`, like the generation token, are only required to exist); else the first
    difference, in one line."""
    want, have = from_skeleton(skeleton), from_listing(listing)
    for name in sorted(set(want.chains) | set(have.chains)):
        w, h = want.chains.get(name), have.chains.get(name)
        if w is None:
            return f"chain {name} is not ntpguard's"
        if h is None:
            return f"chain {name} is missing"
        if (w.hook, w.policy) != (h.hook, h.policy):
            return f"chain {name}: hook {h.hook} policy {h.policy}, not hook {w.hook} " \
                   f"policy {w.policy}"
        if w.priority is not None and w.priority != h.priority:
            return f"chain {name}: priority {h.priority}, not {w.priority}"
        if w.rules != h.rules:
            return f"chain {name}: {h.rules} rules, not {w.rules}"
    for name in sorted(set(want.sets) | set(have.sets)):
        if name not in have.sets:
            return f"set {name} is missing"
        if name not in want.sets:
            return f"set {name} is not ntpguard's"
        if name not in elements:
            continue
        listed, expected = have.sets[name], elements[name]
        if len(listed) != len(expected):
            return f"set {name}: {len(listed)} elements, not {len(expected)}"
        # Addresses print the same on both sides (RFC 5952); prefixes (`a/n`, which nft
        # prints as `a` when n is the full length), map entries (`k : v`) and other kinds are
        # only counted.
        plain = all(isinstance(e, str) for e in listed) and \
            not any("/" in e or " " in e for e in expected)
        if plain and set(listed) != set(expected):
            return f"set {name}: other elements than ntpguard's"
    return ""
