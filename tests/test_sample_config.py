"""packaging/ntpguard.toml is the configuration reference: every key, with its real default."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from ntpguard import config

SAMPLE = Path(__file__).resolve().parent.parent / "packaging" / "ntpguard.toml"


def documented(section: str) -> dict[str, str]:
    """`#key = value` lines of one [section] (or #[[section]] block) of the sample."""
    text = SAMPLE.read_text()
    marker = f"\n#[[{section}]]\n" if "." in section else f"\n[{section}]\n"
    assert marker in text, f"section {section} is not in {SAMPLE.name}"
    body = re.split(r"\n#?\[", text.split(marker, 1)[1], maxsplit=1)[0]
    return dict(re.findall(r"^#([a-z_0-9]+) = (.*)$", body, flags=re.M))


def sections():
    for name, cls in config.SECTIONS.items():
        yield name, cls
        for f in dataclasses.fields(cls):
            inner = typing.get_args(typing.get_type_hints(cls)[f.name])
            if inner and dataclasses.is_dataclass(inner[0]):
                yield f"{name}.{f.name}", inner[0]


@pytest.mark.parametrize("section,cls", list(sections()), ids=lambda v: str(v))
def test_every_key_is_documented_with_its_default(section, cls):
    keys = documented(section)
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        inner = typing.get_args(hint)
        if inner and dataclasses.is_dataclass(inner[0]):
            continue  # a table array, documented as its own #[[section]]
        assert f.name in keys, f"{section}.{f.name} is not documented"
        if f.default is not dataclasses.MISSING:
            shown = config.tomllib.loads(f"v = {keys[f.name]}")["v"]
            shown = tuple(shown) if isinstance(shown, list) else shown
            assert shown == f.default, f"{section}.{f.name}: documented {shown!r}, is {f.default!r}"


def test_the_sample_as_shipped_is_all_defaults():
    assert config.parse(SAMPLE.read_text(), str(SAMPLE)) == config.Config(path=str(SAMPLE))
