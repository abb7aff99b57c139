"""proxy.values.quick_init: the per-request values it builds are the values dataclass builds.

Every class given a quick ``__init__`` is checked against what ``dataclass``'s own
``__init__`` makes (each field set through ``object.__setattr__`` on a bare instance): same
type, fields, equality, hash and repr, still frozen, same signature, and ``replace``,
``copy`` and ``pickle`` still work. Unsuitable classes are refused at decoration.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest

import proxy.app  # noqa: F401 - imports every module that defines a quick class
from proxy.store.events import Guardrail, PageView
from proxy.values import quick_classes, quick_init

QUICK = quick_classes()
# Classes that validate their fields in __post_init__ get real values in their own test.
PLAIN = tuple(cls for cls in QUICK if not hasattr(cls, "__post_init__"))
PER_VIEW = {"PageRequest", "Rewritten", "ForwardingFacts", "VisitorState", "ClientAddress",
            "RequestFacts", "VisitorContext", "Journey", "Recognition", "PageExperiments",
            "Lookup", "PageView", "Guardrail", "Decision", "Op", "SlotRequest", "Geo",
            "Device", "LocalTime"}


class Token:
    """A field value that is equal only to itself, hashable and picklable."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.n == self.n

    def __hash__(self) -> int:
        return hash(("token", self.n))

    def __repr__(self) -> str:
        return f"Token({self.n})"


def reference(cls: type, values: dict[str, object]) -> object:
    """What dataclass's generated __init__ does for a frozen class, without calling it."""
    obj = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    return obj


def test_the_per_request_classes_are_all_built_quickly():
    assert {cls.__name__ for cls in QUICK} == PER_VIEW


@pytest.mark.parametrize("cls", PLAIN, ids=lambda c: c.__qualname__)
def test_a_quick_instance_is_the_instance_dataclass_builds(cls):
    fields = dataclasses.fields(cls)
    values = {f.name: Token(n) for n, f in enumerate(fields)}
    quick = cls(**values)
    ref = reference(cls, values)
    assert type(quick) is cls
    assert all(getattr(quick, name) == value for name, value in values.items())
    assert quick == ref and repr(quick) == repr(ref)
    if cls.__hash__ is not None:
        assert hash(quick) == hash(ref)
    assert cls(*values.values()) == quick   # positionally, as the hot path builds them
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(quick, fields[0].name, Token(99))
    changed = dataclasses.replace(quick, **{fields[-1].name: Token(-1)})
    assert type(changed) is cls and getattr(changed, fields[-1].name) == Token(-1)
    assert copy.copy(quick) == quick and copy.deepcopy(quick) == quick
    assert pickle.loads(pickle.dumps(quick)) == quick


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__qualname__)
def test_the_quick_init_has_the_dataclass_signature(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in dataclasses.fields(cls)]
    for p, f in zip(params, dataclasses.fields(cls), strict=True):
        assert p.default is (inspect.Parameter.empty if f.default is dataclasses.MISSING
                             else f.default)


def test_defaults_apply_when_fields_are_left_out():
    from proxy.page import PageRequest
    request = PageRequest("GET", "example.com", "/", "", ())
    assert (request.context, request.experiments, request.compiled) == (None, None, None)
    assert request == reference(PageRequest, {
        "method": "GET", "host": "example.com", "path": "/", "query": "", "headers": (),
        "context": None, "experiments": None, "compiled": None})


def test_post_init_still_validates():
    assert {cls for cls in QUICK if cls not in PLAIN} == {PageView, Guardrail}
    assert PageView("2026-11-23") == reference(PageView, {"day": "2026-11-23"})
    with pytest.raises(ValueError, match=r"PageView\.day"):
        PageView(day="yesterday")
    values = {"experiment": "hero", "arm": "b", "day": "2026-11-23", "latency_ms": 12.5,
              "error": False, "bytes": 1000}
    guardrail = Guardrail(*values.values())
    assert guardrail == reference(Guardrail, values)
    assert hash(guardrail) == hash(reference(Guardrail, values))
    with pytest.raises(ValueError, match="must be >= 0"):
        Guardrail(**{**values, "bytes": -1})


def test_unsuitable_classes_are_refused_with_the_reason():
    @dataclasses.dataclass(frozen=True)
    class NotSlotted:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls in (NotSlotted, NotFrozen):
        with pytest.raises(TypeError, match=r"must be a dataclass\(frozen=True, slots=True\)"):
            quick_init(cls)
    with pytest.raises(TypeError, match=r"Derived\.b has init=False"):
        quick_init(Derived)
    with pytest.raises(TypeError, match=r"Factory\.a has a default_factory"):
        quick_init(Factory)


def test_a_quick_class_can_not_be_subclassed():
    @quick_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Parent:
        a: int

    with pytest.raises(TypeError, match="can not be subclassed"):
        class Child(Parent):   # would be turned into a Parent by the quick __init__
            pass
