"""ntpguard.records: a @record behaves as the dataclass it stands for (the reference is
dataclasses' own, built from the same class body)."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pickle
import pkgutil
import sys
from dataclasses import field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ntpguard
from ntpguard.records import record


def _body() -> dict[str, Any]:
    return {
        "__annotations__": {"name": "str", "count": "int", "note": "Optional[str]",
                            "tags": "tuple[str, ...]", "cache": "dict[str, int]"},
        "count": 0,
        "note": field(default=None, repr=False),
        "tags": (),
        "cache": field(default_factory=dict, compare=False),
        "__module__": __name__,
    }


def _pair(frozen: bool) -> tuple[type, type]:
    """The same class made by @record and by @dataclass, under the same name."""
    mine = type("Thing", (), _body())
    theirs = type("Thing", (), _body())
    made = record(mine) if frozen else record(frozen=False)(mine)
    return made, dataclasses.dataclass(frozen=frozen)(theirs)


@record
class Point:
    x: int
    y: int


values = st.tuples(st.sampled_from(["a", "b", "ü"]), st.integers(-2, 2),
                   st.one_of(st.none(), st.just("n")),
                   st.lists(st.sampled_from(["x", "y"]), max_size=2).map(tuple),
                   st.dictionaries(st.sampled_from(["k"]), st.integers(0, 1)))


@given(st.booleans(), values, values)
def test_a_record_compares_hashes_and_shows_as_its_dataclass(frozen: bool, a: tuple, b: tuple
                                                             ) -> None:
    mine, theirs = _pair(frozen)
    ma, mb, ta, tb = mine(*a), mine(*b), theirs(*a), theirs(*b)
    assert (ma == mb) == (ta == tb)
    assert (ma != mb) == (ta != tb)
    assert repr(ma) == repr(ta)
    if frozen:
        assert (hash(ma) == hash(mb)) == (hash(ta) == hash(tb))
        assert hash(ma) == hash(ta)
    else:
        with pytest.raises(TypeError):
            hash(ma)
    assert ma != ta and ta != ma  # another class: never equal, as between two dataclasses
    assert ma != a


def test_frozen_is_frozen_and_the_dataclass_tools_work() -> None:
    mine, _ = _pair(True)
    thing = mine("a", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        thing.count = 2  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del thing.count  # type: ignore[attr-defined]
    assert dataclasses.is_dataclass(thing)
    assert dataclasses.replace(thing, count=3) == mine("a", 3)
    assert dataclasses.asdict(thing) == {"name": "a", "count": 1, "note": None, "tags": (),
                                         "cache": {}}
    assert copy.deepcopy(thing) == thing
    point = Point(1, 2)
    assert pickle.loads(pickle.dumps(point)) == point  # what a worker process is sent
    mutable, _ = _pair(False)
    other = mutable("a")
    other.count = 5  # type: ignore[attr-defined]
    assert other == mutable("a", 5)


def test_a_method_the_class_defines_wins() -> None:
    @record
    class Odd:
        x: int

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 7

        def __repr__(self) -> str:
            return "odd"

    assert Odd(1) == Odd(2) and hash(Odd(1)) == 7 and repr(Odd(1)) == "odd"

    def own_eq(self: object, other: object) -> bool:
        return True

    # Only __eq__ of its own: a frozen record is still hashed by its fields, a mutable one
    # not at all, as dataclasses does it.
    for frozen in (True, False):
        mine = type("Half", (), {"__annotations__": {"x": "int"}, "__eq__": own_eq,
                                 "__module__": __name__})
        theirs = type("Half", (), {"__annotations__": {"x": "int"}, "__eq__": own_eq,
                                   "__module__": __name__})
        mine = record(mine) if frozen else record(frozen=False)(mine)
        theirs = dataclasses.dataclass(frozen=frozen)(theirs)
        assert mine(1) == mine(2)
        if frozen:
            assert hash(mine(3)) == hash(theirs(3)) == hash((3,))
        else:
            assert mine.__hash__ is None and theirs.__hash__ is None

    @record
    class Empty:
        pass

    assert Empty() == Empty() and hash(Empty()) == hash(()) and repr(Empty()).endswith(".Empty()")


def test_every_record_in_ntpguard_is_made_by_record() -> None:
    """One way to make a record: a dataclass made by dataclasses' decorator directly would
    carry the generated methods (and their cost at import). And each has a docstring:
    dataclasses makes one for a class without from inspect.signature, which tokenizes the
    signature (~4 ms the first time in a process: tokenize compiles its regular expressions)."""
    for info in pkgutil.walk_packages(ntpguard.__path__, "ntpguard."):
        if info.name.endswith("__main__"):
            continue  # running it is the program
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == info.name and \
                    dataclasses.is_dataclass(obj):
                assert "_record_compared" in vars(obj), f"{info.name}.{obj.__name__}"
                assert not obj.__doc__.startswith(f"{obj.__name__}("), \
                    f"{info.name}.{obj.__name__}: no docstring"


# A field of each kind dataclasses' __init__ knows: no default, a default, a default factory,
# not a parameter (init=False) with either, and keyword-only (Python >= 3.10) with or without.
_KINDS = ["plain", "default", "factory", "hidden", "hidden_factory"] + (
    ["kw", "kw_default"] if sys.version_info >= (3, 10) else [])


def _spec_body(kinds: list[str], post_init: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"__annotations__": {}, "__module__": __name__}
    for i, kind in enumerate(kinds):
        name = f"f{i}"
        body["__annotations__"][name] = "Any"
        body[name] = {
            "plain": None, "default": i * 10, "factory": field(default_factory=list),
            "hidden": field(default=-i, init=False),
            "hidden_factory": field(default_factory=dict, init=False),
            "kw": field(kw_only=True) if sys.version_info >= (3, 10) else None,
            "kw_default": field(default="k", kw_only=True) if sys.version_info >= (3, 10)
            else None}[kind]
        if body[name] is None:
            del body[name]
    if post_init:
        def __post_init__(self: Any) -> None:
            object.__setattr__(self, "seen", sorted(vars(self)))
        body["__post_init__"] = __post_init__
    return body


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except TypeError:
        return ("TypeError", None)


@given(st.lists(st.sampled_from(_KINDS), max_size=5), st.booleans(), st.booleans(),
       st.integers(0, 6), st.lists(st.booleans(), max_size=7))
def test_a_record_is_made_as_its_dataclass(kinds: list[str], frozen: bool, post_init: bool,
                                           given_args: int, keywords: list[bool]) -> None:
    """The same class body, the same arguments: the same fields set (and __post_init__ run),
    or TypeError from both, when the class is defined or when it is called."""
    def made(decorate: Any) -> Any:
        return _outcome(lambda: decorate(type("Spec", (), _spec_body(kinds, post_init))))
    mine = made(record if frozen else record(frozen=False))
    theirs = made(dataclasses.dataclass(frozen=frozen))
    assert mine[0] == theirs[0]
    if mine[0] != "ok":
        return
    positional = [f"p{i}" for i in range(given_args)]
    named = {f"f{i}": f"k{i}" for i, kw in enumerate(keywords) if kw}
    for _ in range(2):  # the first call writes the record's __init__, the second uses it
        a = _outcome(lambda: vars(mine[1](*positional, **named)))
        b = _outcome(lambda: vars(theirs[1](*positional, **named)))
        assert a == b
    if a[0] == "ok":
        # A factory's value is a new one each time (dataclasses' instances tell when).
        one, two = mine[1](*positional, **named), mine[1](*positional, **named)
        three, four = theirs[1](*positional, **named), theirs[1](*positional, **named)
        for name in vars(one):
            assert (getattr(one, name) is getattr(two, name)) == (
                getattr(three, name) is getattr(four, name))
        params = inspect.signature(mine[1]).parameters
        assert [(p.name, p.kind, p.default is p.empty) for p in params.values()] == [
            (p.name, p.kind, p.default is p.empty)
            for p in inspect.signature(theirs[1]).parameters.values()]


def test_a_record_refuses_what_dataclasses_refuses() -> None:
    with pytest.raises(TypeError, match="non-default argument 'y' follows default"):
        record(type("Bad", (), {"__annotations__": {"x": "int", "y": "int"}, "x": 0}))
    with pytest.raises(TypeError, match="__setattr__"):
        record(type("Own", (), {"__annotations__": {"x": "int"},
                                "__setattr__": lambda self, n, v: None}))
    with pytest.raises(TypeError, match="cannot inherit"):
        record(type("Child", (Point,), {"__annotations__": {"z": "int"}}))
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]

    class Plain(Point):  # a plain subclass may have attributes of its own, not new fields
        pass
    p = Plain(1, 2)
    p.extra = 3  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Point(1, 2).extra = 3  # type: ignore[attr-defined]
