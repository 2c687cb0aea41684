"""`@record`: how ntpguard makes its record types (dataclasses, their methods shared).

`@record` is `@dataclass(frozen=True)`, `@record(frozen=False)` is `@dataclass`, and they behave
the same: made with the same arguments, equal when of the same class with equal fields (those
not `compare=False`) in order, hashed by those fields when frozen (unhashable when not), shown
as `Name(field=value, ...)`, a frozen one's fields not assignable (FrozenInstanceError); and
dataclasses' tools (fields, replace, asdict) work on them. What differs is the cost of defining
one. dataclasses writes every method as Python source and compiles it when the class is
defined, ~0.6 ms a frozen class of 7 fields on the 2-core machine, and `rules apply` defines
~47 records before it does anything. Here dataclasses only collects the fields (~0.16 ms);
`__eq__`, `__hash__` and `__repr__` are shared functions that read per-class field tuples
(operator.attrgetter), so are a frozen record's `__setattr__` / `__delattr__`, and `__init__`
is written and compiled (as dataclasses writes it) when the class is first instantiated: 12 of
the 47 never are in a `rules apply`. A whole `rules apply` after one verdict change, 40 runs
alternating with the tree before on one state, each step: the shared comparison took the CPU
median from 0.245 to 0.209 s, the rest from 0.209 to 0.194 s (on another day).

A record cannot inherit from another (none does): the frozen checks and `__init__` here are
those of a class whose fields are all its own.
"""

from __future__ import annotations

import dataclasses
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TypeVar, Union, overload

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda fn: fn

T = TypeVar("T", bound=type)
# The default of a parameter whose field has a default factory (dataclasses has its own).
_HAS_FACTORY = type("_HAS_FACTORY", (), {"__repr__": lambda self: "<factory>"})()


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


# A frozen record refuses every assignment, and an instance of a plain subclass (its own
# `__setattr__` not ours) an assignment to a field, as dataclasses' generated methods do.
def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    if "__setattr__" in type(self).__dict__ or name in self._record_names:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _frozen_delattr(self: Any, name: str) -> None:
    if "__delattr__" in type(self).__dict__ or name in self._record_names:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)


def _check_order(fields: Sequence[dataclasses.Field[Any]]) -> None:
    """dataclasses' refusal, when the class is defined: a parameter without a default after
    one with a default."""
    seen_default = False
    for f in fields:
        if not f.init or getattr(f, "kw_only", False):
            continue
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")


def _init_source(fields: Sequence[dataclasses.Field[Any]], frozen: bool, post_init: bool
                 ) -> tuple[str, dict[str, Any]]:
    """dataclasses' `__init__` for these fields, as source defining `make(...)` that returns
    it, and the values `make` takes: defaults and factories by name (closure cells, as fast to
    read as dataclasses' globals)."""
    MISSING = dataclasses.MISSING
    self_name = "__record_self__" if any(f.name == "self" for f in fields) else "self"
    names: dict[str, Any] = {"__record_set__": object.__setattr__,
                             "__record_factory__": _HAS_FACTORY}
    params: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        default, factory = f"__record_default_{f.name}__", f"__record_factory_{f.name}__"
        if f.default_factory is not MISSING:
            names[factory] = f.default_factory
            value = (f"{factory}() if {f.name} is __record_factory__ else {f.name}"
                     if f.init else f"{factory}()")
        elif f.init:
            value = f.name
        else:
            continue  # the class attribute holds its default, as with dataclasses
        if f.init:
            param = f.name
            if f.default is not MISSING:
                names[default] = f.default
                param += f"={default}"
            elif f.default_factory is not MISSING:
                param += "=__record_factory__"
            (keyword if getattr(f, "kw_only", False) else params).append(param)
        body.append(f"  __record_set__({self_name}, {f.name!r}, {value})" if frozen
                    else f"  {self_name}.{f.name} = {value}")
    if post_init:
        body.append(f"  {self_name}.__post_init__()")
    signature = ", ".join([self_name, *params, *(["*", *keyword] if keyword else [])])
    source = (f"def make({', '.join(names)}):\n"
              f" def __init__({signature}):\n" + ("\n".join(body) or "  pass") + "\n"
              " return __init__\n")
    return source, names


def _lazy_init(cls: Any, frozen: bool) -> Callable[..., None]:
    """A stand-in `__init__` that writes the real one at the class's first instance."""
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        source, names = _init_source(dataclasses.fields(cls), frozen,
                                     hasattr(cls, "__post_init__"))
        scope: dict[str, Any] = {}
        exec(source, {}, scope)
        init = scope["make"](**names)
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = init
        init(self, *args, **kwargs)
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _make(cls: T, frozen: bool) -> T:
    own = dict(cls.__dict__)
    if any(dataclasses.is_dataclass(base) for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__qualname__}: a record cannot inherit from a dataclass")
    for name in ("__setattr__", "__delattr__") if frozen else ():
        if name in own:
            raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
    # A method the class defines itself wins, as with dataclasses; a class body that defines
    # __eq__ gets __hash__ = None from Python, which dataclasses does not count as defined.
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    made: Any = dataclasses.dataclass(init=False, eq=False, repr=False)(cls)
    made.__dataclass_params__.init = True
    made.__dataclass_params__.frozen = frozen
    if "__init__" not in own:  # the class's own wins, as with dataclasses
        made.__init__ = _lazy_init(made, frozen)
    if frozen:
        made.__setattr__ = _frozen_setattr
        made.__delattr__ = _frozen_delattr
    fields = dataclasses.fields(made)
    _check_order(fields)
    made._record_names = frozenset(f.name for f in fields)
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
