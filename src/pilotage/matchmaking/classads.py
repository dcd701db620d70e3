"""The one thin wrapper around ``classad2``: parsing, evaluating, references.

``classad2`` is untyped, so ClassAds and expressions are typed ``Any`` here and in the
modules that hold them; nothing else of ``classad2`` is used outside this module.
``htcondor2`` is imported for its side effect: without it, list functions such as
``stringListMember`` evaluate to ``error``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Final

import classad2
import htcondor2  # noqa: F401  (registers the list functions classad2 needs)

from pilotage.errors import BadInput

ClassAd = classad2.ClassAd
ExprTree = classad2.ExprTree


def parse_expr(text: str, what: str = "expression") -> Any:
    """Parse ClassAd expression text; :class:`~pilotage.errors.BadInput` if it does not parse."""
    try:
        return classad2.ExprTree(text)
    except classad2.ClassAdException:
        raise BadInput(f"{what} {text!r} is not a valid ClassAd expression") from None


def new_ad(attrs: Mapping[str, object], expressions: Mapping[str, str] | None = None) -> Any:
    """A ClassAd from literal values and, separately, expression texts."""
    ad = classad2.ClassAd()
    for name, value in attrs.items():
        if value is not None:
            ad[name] = value
    for name, text in (expressions or {}).items():
        ad[name] = parse_expr(text, name)
    return ad


def copy_ad(ad: Any) -> Any:
    """An independent copy of a ClassAd."""
    return classad2.ClassAd(repr(ad))


def attributes(ad: Any) -> dict[str, object]:
    """Every attribute of ``ad`` by lower-case name, as ``classad2`` hands them back.

    Literals come back as Python values, anything else as an expression tree. One pass
    over the ad is cheaper than many look-ups, which each cross into ``classad2``.
    """
    return {name.lower(): value for name, value in ad.items()}


def evaluate(ad: Any, name: str, values: Mapping[str, object] | None = None) -> object:
    """The value of attribute ``name`` in ``ad`` alone; ``None`` when it is missing.

    ``values``, from :func:`attributes`, saves the look-up.
    """
    value = ad.get(name) if values is None else values.get(name.lower())
    if isinstance(value, classad2.ExprTree):
        value = value.eval(ad)
    return value


def is_true(expr: Any, my: Any, target: Any) -> bool:
    """Whether ``expr`` evaluates to boolean ``true`` with ``MY`` = my and ``TARGET`` = target.

    ``undefined``, ``error`` and non-boolean values are not true, as in matchmaking.
    """
    return expr.eval(my, target) is True


def _ref_name(ref: str) -> str:
    ref = ref.lower()
    return ref[len("target.") :] if ref.startswith("target.") else ref


def references(ad: Any, expr: Any) -> tuple[frozenset[str], frozenset[str]]:
    """The attributes ``expr`` uses: (defined in ``ad``, not defined in ``ad``), lower case.

    Names are followed through ``ad``'s own attributes (``Foo`` in ``Foo = Bar * 2`` brings
    ``Bar``). Undefined ones lose their ``TARGET.`` prefix: in a match they are the other
    ad's attributes.
    """
    internal = frozenset(_ref_name(r) for r in ad.internalRefs(expr) if r)
    external = frozenset(_ref_name(r) for r in ad.externalRefs(expr) if r)
    return internal, external


_MISSING: Final = ("<missing>",)
_SCALARS: Final = (int, float, bool)
#: The Python types of ClassAd literals ``classad2`` hands back as plain values.
LITERAL_TYPES: Final = (str, int, float, bool)


def hashable_value(value: object) -> Hashable:
    """A hashable stand-in for an evaluated value, distinct across ClassAd types.

    ``true`` and ``1`` differ in ClassAds but are equal in Python, so scalars are tagged
    with their type.
    """
    if value is None:
        return _MISSING
    kind = type(value)
    if kind is str:
        return value
    if kind in _SCALARS:
        return (kind.__name__, value)
    return ("repr", repr(value))


def evaluate_number(
    ad: Any, name: str, default: float | None, values: Mapping[str, object] | None = None
) -> float | None:
    """Attribute ``name`` as a number, ``default`` if missing; ``BadInput`` if not a number."""
    value = evaluate(ad, name, values)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{name} must be a number, not {value!r}")
    return float(value)


def evaluate_string(ad: Any, name: str, values: Mapping[str, object] | None = None) -> str | None:
    """Attribute ``name`` as a string, ``None`` if missing; ``BadInput`` if not a string."""
    value = evaluate(ad, name, values)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{name} must be a string, not {value!r}")
    return value
