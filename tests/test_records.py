"""ntpguard.records: a @record behaves as the dataclass it stands for (the reference is
dataclasses' own, built from the same class body)."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pickle
import pkgutil
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
    carry the generated methods (and their cost at import)."""
    for info in pkgutil.walk_packages(ntpguard.__path__, "ntpguard."):
        if info.name.endswith("__main__"):
            continue  # running it is the program
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == info.name and \
                    dataclasses.is_dataclass(obj):
                assert "_record_compared" in vars(obj), f"{info.name}.{obj.__name__}"
