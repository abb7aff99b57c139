"""Frozen values built on every request, built ~3x faster: :func:`quick_init`.

Kairos keeps its values in frozen dataclasses, and a page view builds about twenty of them
(the visitor's context and state, the request's facts, the cache lookup, the plan's
decisions). On Python 3.11 the ``__init__`` that ``dataclass(frozen=True)`` generates
sets every field through ``object.__setattr__`` (the class's own ``__setattr__`` refuses),
a function call per field: ~140 ns a field, ~2.3 µs for the 16 fields of a
``VisitorContext``, against ~0.25 µs for the same class unfrozen.

``quick_init`` keeps the class exactly as ``dataclass`` made it (frozen afterwards, same
fields, ``__eq__``, ``__hash__``, ``__repr__``, ``replace``, pickling) and gives it an
``__init__`` with the same signature that builds the instance as a *builder*: an unfrozen
class with the same ``__slots__`` (so the same memory layout), whose fields are set by plain
assignment, and then turns the instance into the frozen class by assigning ``__class__``,
which CPython allows between classes of the same layout. Nothing outside ``__init__`` ever
sees the builder. 16 fields: ~0.8 µs instead of ~2.8 (timeit, same run); a whole page view
11% fewer instructions, three of its classes made slotted on the way (valgrind,
``bench/hot_view.py``; bench/README.md, "Sixth round"). Making the per-request
values mutable would save a little more and give up what frozen buys (values shared by
caches can not be changed by a caller); this keeps it.

Only simple classes qualify, and anything else is refused when the module is imported, with
what is wrong: slotted and frozen, fields all set by ``__init__`` (no ``field(init=False)``,
no ``default_factory``, no keyword-only fields). Subclassing one is refused (its instances
would be turned into the parent). A ``__post_init__`` runs as ``dataclass`` would run it, after the
fields are set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_QUICK: list[type] = []   # every class given a quick __init__ (its tests walk them all)


def quick_init(cls: type[T]) -> type[T]:
    """``cls`` (a frozen, slotted dataclass) with a faster ``__init__`` of the same signature."""
    fields = _fields_of(cls)
    builder = type(f"_Building{cls.__name__}", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    names: dict[str, Any] = {"_builder": builder, "_cls": cls,
                             "_set_class": object.__setattr__}
    params = []
    for f in fields:
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = ["    _set_class(self, '__class__', _builder)"]   # the frozen __setattr__ refuses
    body += [f"    self.{f.name} = {f.name}" for f in fields]
    body.append("    self.__class__ = _cls")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(source, names)   # generated from the class's own field names only
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = f"Build a {cls.__name__} (see proxy.values.quick_init)."
    cls.__init__ = init   # type: ignore[misc]
    cls.__init_subclass__ = classmethod(_refuse_subclass)   # type: ignore[assignment]
    _QUICK.append(cls)
    return cls


def quick_classes() -> tuple[type, ...]:
    return tuple(_QUICK)


def _fields_of(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    where = f"{cls.__module__}.{cls.__qualname__}"
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in vars(cls):
        raise TypeError(f"quick_init: {where} must be a dataclass(frozen=True, slots=True), "
                        "with quick_init above the @dataclass line")
    fields = dataclasses.fields(cls)   # type: ignore[arg-type]
    for f in fields:
        unusual = ("init=False" if not f.init else "kw_only=True" if f.kw_only
                   else "a default_factory" if f.default_factory is not dataclasses.MISSING
                   else "")
        if unusual:
            raise TypeError(f"quick_init: {where}.{f.name} has {unusual}; only plain fields "
                            "(a value default at most) can be set this way: leave the class "
                            "to dataclass's own __init__")
    return fields


def _refuse_subclass(cls: type, **kwargs: Any) -> None:
    raise TypeError(f"{cls.__mro__[1].__qualname__} is built by quick_init and can not be "
                    f"subclassed ({cls.__qualname__}): its instances would become the parent")
