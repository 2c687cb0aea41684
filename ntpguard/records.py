"""`@record`: how ntpguard makes its record types (dataclasses, their comparison shared).

`@record` is `@dataclass(frozen=True)`, `@record(frozen=False)` is `@dataclass`, and they behave
the same: equal when of the same class with equal fields (those not `compare=False`) in order,
hashed by those fields when frozen (unhashable when not), shown as `Name(field=value, ...)`.
What differs is the cost of defining one. dataclasses writes every method as Python source and
compiles it when the class is defined, ~1.3 ms a frozen class on the 2-core machine; `__eq__`,
`__hash__` and `__repr__` are a third of that, and `rules apply` defines ~45 records before it
does anything. Here those three are shared functions that read per-class field tuples
(operator.attrgetter): a whole `rules apply` after one verdict change took 16-35 ms less,
0.158 s against 0.174-0.193 s (the fastest of 30 runs alternating with the dataclass tree,
three times). `__init__` and a frozen record's `__setattr__` / `__delattr__`
(which raise dataclasses.FrozenInstanceError) are still dataclasses' own.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, overload

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda fn: fn

T = TypeVar("T", bound=type)


def _tuple_of(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The named attributes of an object as a tuple (attrgetter's C loop; it returns a bare
    value for one name and needs at least one)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _eq(self: Any, other: object) -> Any:
    compared = self._record_compared
    if other.__class__ is self.__class__:
        return compared(self) == compared(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self._record_hashed(self))


def _repr(self: Any) -> str:
    shown = zip(self._record_shown, self._record_shown_values(self))
    return (f"{self.__class__.__qualname__}("
            f"{', '.join(f'{name}={value!r}' for name, value in shown)})")


def _make(cls: T, frozen: bool) -> T:
    own = dict(cls.__dict__)
    # A method the class defines itself wins, as with dataclasses; a class body that defines
    # __eq__ gets __hash__ = None from Python, which dataclasses does not count as defined.
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    made: Any = dataclasses.dataclass(frozen=frozen, eq=False, repr=False)(cls)
    fields = dataclasses.fields(made)
    made._record_compared = staticmethod(_tuple_of([f.name for f in fields if f.compare]))
    made._record_hashed = staticmethod(_tuple_of(
        [f.name for f in fields if (f.compare if f.hash is None else f.hash)]))
    made._record_shown = tuple(f.name for f in fields if f.repr)
    made._record_shown_values = staticmethod(_tuple_of(list(made._record_shown)))
    if "__eq__" not in own:
        made.__eq__ = _eq
    if not explicit_hash:
        made.__hash__ = _hash if frozen else None
    if "__repr__" not in own:
        made.__repr__ = _repr
    return made


@overload
def record(cls: T, /) -> T: ...
@overload
def record(*, frozen: bool = True) -> Callable[[T], T]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: Optional[T] = None, /, *, frozen: bool = True
           ) -> Union[T, Callable[[T], T]]:
    """`@record` or `@record(frozen=False)` on a class: see the module's docstring."""
    if cls is None:
        return lambda c: _make(c, frozen)
    return _make(cls, frozen)
