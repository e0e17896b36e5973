"""Typed, bounded values: the one check of every config field, CLI flag and stored metadata key.

A config is a dataclass whose fields declare their range in their metadata::

    epochs: int = field(default=70, metadata=limits(1, MAX_EPOCHS))

and whose ``__post_init__`` calls :func:`check_fields`, which checks every field against its type hint
and its :class:`Limits`, and normalises it (a JSON list becomes the tuple the hint names, an int
becomes the float it names). :func:`from_mapping` builds a config from a parsed file (refusing a
non-object, unknown keys and missing ones), the readers of stored metadata and the CLI's typed flags
call :func:`check_value` with the same rules. So everything zfnet reads from a user is refused the
same way, before anything is allocated or written:

- a wrong type: ``"5"``, ``2.5`` or ``true`` where a whole number belongs, ``null`` where nothing
  optional is, a list where an object belongs, a string where a list belongs;
- a non-finite number (``NaN``, ``Infinity``): no field takes one;
- a number outside its range: every numeric field has a finite upper bound (a test checks it), sized
  so that memory stays sane (the models' widths, input size and class count; their parameter count is
  checked by :class:`~zfnet.models.ConvNetConfig` itself).

The error is a :class:`~zfnet.errors.ZFNetError` naming the field, what it must be and what it got:
``training option epochs must be a whole number from 1 to 10000, got '5' (a string)``; the CLI prints
it as one line and exits with status 2.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

from .errors import ZFNetError

__all__ = ["Limits", "limits", "field_limits", "check_value", "check_fields", "from_mapping", "describe_value",
           "env_seconds"]

_KEY = "zfnet"
MAX_ITEMS = 100_000
"""The most items a list field takes (snapshots, say) unless its limits say fewer."""
MAX_TEXT = 4096
"""The longest string a field takes (a path, a name)."""


@dataclass(frozen=True)
class Limits:
    """What a field's value may be, beyond its type.

    Attributes:
        low, high: the range of a number, or of each number of a list (None: unbounded on that side).
        low_open, high_open: the range excludes that end.
        items: per position of a fixed-length tuple, the limits of that item (overrides low/high).
        choices: the valid strings (or the valid items of a list of strings).
        pattern: a regular expression a string must match in full (``choices`` say it in words).
        max_items: the most items of a list.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    items: tuple[Limits, ...] | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    max_items: int = MAX_ITEMS

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        """The range in words: ``from 1 to 10000``, ``in (0, 1)``, ``at least 0``."""
        lo, hi = self.low, self.high
        if lo is None and hi is None:
            return ""
        if lo is not None and hi is not None:
            if not self.low_open and not self.high_open:
                return f" from {_num(lo)} to {_num(hi)}"
            return f" in {'(' if self.low_open else '['}{_num(lo)}, {_num(hi)}{')' if self.high_open else ']'}"
        if lo is not None:
            return f" {'above' if self.low_open else 'at least'} {_num(lo)}"
        return f" {'below' if self.high_open else 'at most'} {_num(hi)}"


def limits(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           items: tuple[Limits, ...] | None = None, choices: tuple[str, ...] | None = None,
           pattern: str | None = None, max_items: int = MAX_ITEMS) -> dict[str, Limits]:
    """Field metadata declaring a field's :class:`Limits`: ``field(default=1, metadata=limits(1, 100))``."""
    return {_KEY: Limits(low, high, low_open, high_open, items, choices, pattern, max_items)}


def _num(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    return f"{v:g}"


def describe_value(value: Any) -> str:
    """A value as an error message shows it: ``'5' (a string)``, ``2.5``, ``null``, ``[1, 2] (a list)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:20]}... (a {len(text)}-digit number)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {str: "a string", list: "a list", tuple: "a list", dict: "an object"}.get(type(value))
    if kind is None:
        kind = "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    return f"{text} ({kind})"


def _expect(hint: Any) -> str:
    """What a value of type ``hint`` is, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "anything"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        parts = [_expect(a) for a in args]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0]) if len(set(args)) == 1 else 'values'}"
    if origin in (dict, Mapping) or hint is dict:
        return "an object (a table of named values)"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {int: "whole numbers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, "values")


def _fits_kind(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the kind ``hint`` names (its range aside): picks the branch of a union."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, Mapping)
    return isinstance(value, hint) if isinstance(hint, type) else False


def check_value(value: Any, hint: Any, name: str, *, what: str = "option", limit: Limits | None = None) -> Any:
    """``value`` checked against the type ``hint`` and ``limit``, normalised; else a one-line error.

    Args:
        value: what was read (from JSON, TOML, a flag or a file's metadata).
        hint: the type it must have: ``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``,
            ``tuple[int, int]``, ``dict[str, Any]``, a union of these, ``X | None``, or ``Any``.
        name: the field's name, for the message.
        what: what the field belongs to, for the message (``"training option"``, ``"model option"``).
        limit: its range, choices or pattern.

    Returns:
        The value, normalised: a list becomes a tuple, an int a float where the hint says ``float``.

    Raises:
        ZFNetError: ``"{what} {name} must be {expectation}, got {value}"``.

    Example:
        >>> check_value([1, 2], tuple[int, ...], "snapshots")
        (1, 2)
        >>> check_value("5", int, "epochs", what="training option", limit=Limits(1, 100))
        Traceback (most recent call last):
        ...
        zfnet.errors.ZFNetError: training option epochs must be a whole number from 1 to 100, got '5' (a string)
    """
    limit = limit or Limits()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    given = value

    def fail(expect: str) -> ZFNetError:
        return ZFNetError(f"{what} {name} must be {expect}, got {describe_value(given)}")

    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        branches = [a for a in args if _fits_kind(value, a)]
        if not branches:
            raise fail(_expect_in(hint, limit))
        try:
            return check_value(value, branches[0], name, what=what, limit=limit)
        except ZFNetError:
            raise fail(_expect_in(hint, limit)) from None
    if not _fits_kind(value, hint):
        raise fail(_expect_in(hint, limit))
    if hint is int or hint is float:
        if hint is float:
            if isinstance(value, int) and abs(value) > 1e300:
                raise fail(_expect_in(hint, limit))
            value = float(value)
            if not math.isfinite(value):
                raise fail(_expect_in(hint, limit))
        if not limit.contains(value):
            raise fail(_expect_in(hint, limit))
        return value
    if hint is str:
        if len(value) > MAX_TEXT:
            raise fail(f"a string of at most {MAX_TEXT} characters")
        if "\x00" in value:
            raise fail("a string without NUL characters")
        if limit.choices is not None and limit.pattern is None and value not in limit.choices:
            raise fail("one of " + ", ".join(limit.choices))
        if limit.pattern is not None and not re.fullmatch(limit.pattern, value):
            raise fail("one of " + ", ".join(limit.choices or (limit.pattern,)))
        return value
    if origin is tuple:
        items = list(value)
        variadic = len(args) == 2 and args[1] is Ellipsis
        if variadic:
            if len(items) > limit.max_items:
                raise fail(f"{_expect(hint)}, at most {limit.max_items} of them")
            hints = [args[0]] * len(items)
        else:
            if len(items) != len(args):
                raise fail(_expect_in(hint, limit))
            hints = list(args)
        out = []
        for i, (item, item_hint) in enumerate(zip(items, hints)):
            item_limit = limit.items[i] if limit.items is not None and i < len(limit.items) else Limits(
                limit.low, limit.high, limit.low_open, limit.high_open, choices=limit.choices, pattern=limit.pattern)
            try:
                out.append(check_value(item, item_hint, f"{name}[{i}]", what=what, limit=item_limit))
            except ZFNetError:
                raise fail(_expect_in(hint, limit)) from None
        return tuple(out)
    if origin in (dict, Mapping) or hint is dict:
        key_hint, value_hint = (args + (Any, Any))[:2] if args else (Any, Any)
        if len(value) > limit.max_items:
            raise fail(f"{_expect(hint)} of at most {limit.max_items} entries")
        out_map = {}
        for k, v in value.items():
            if key_hint is str and not isinstance(k, str):
                raise fail(_expect(hint))
            out_map[k] = check_value(v, value_hint, f"{name}.{k}", what=what) if value_hint is not Any else v
        return out_map
    return value


def _expect_in(hint: Any, limit: Limits) -> str:
    """What a value of type ``hint`` within ``limit`` is, in words: ``a whole number from 0 to 8, or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_expect_in(a, limit) if a is not type(None) else "null" for a in args]
        return ", ".join(parts[:-1]) + ", or " + parts[-1] if len(parts) > 1 else parts[0]
    if hint is str and limit.choices is not None:
        return "one of " + ", ".join(limit.choices)
    return _expect(hint) + _range_words(hint, limit)


def _range_words(hint: Any, limit: Limits) -> str:
    """The limits in words, for a message about a value of the wrong type."""
    if limit.items is not None:
        args = typing.get_args(hint)
        same = len(set(args)) == 1
        parts = [(item.describe().strip() if same else f"{_expect(a)}{item.describe()}")
                 for a, item in zip(args, limit.items)]
        if parts:
            return f" ({', '.join(parts)})"
    if limit.choices is not None:
        return f" (one of {', '.join(limit.choices)})"
    words = limit.describe()
    if words and typing.get_origin(hint) is tuple:
        return f", each{words}"
    return words


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def field_limits(f: Any) -> Limits | None:
    """The :class:`Limits` a dataclass field declares in its metadata (None: only its type)."""
    return f.metadata.get(_KEY)


def check_fields(obj: Any, what: str) -> None:
    """Check and normalise every field of the dataclass instance ``obj`` in place (frozen ones too).

    Call it first in ``__post_init__``; cross-field rules come after it, on values of the right type.

    Raises:
        ZFNetError: the first field that is of the wrong type or outside its limits.
    """
    hints = _hints(type(obj))
    for f in fields(obj):
        value = check_value(getattr(obj, f.name), hints[f.name], f.name, what=what, limit=field_limits(f))
        object.__setattr__(obj, f.name, value)


T = typing.TypeVar("T")


def from_mapping(cls: type[T], data: Any, what: str, *, source: str | None = None) -> T:
    """An instance of the dataclass ``cls`` from parsed JSON or TOML, validated field by field.

    Args:
        cls: a dataclass whose ``__post_init__`` calls :func:`check_fields`.
        data: what was read: it must be an object (a dict) of field names to values.
        what: what its fields are, for messages (``"training option"``).
        source: where it came from (a file), prefixed to messages.

    Raises:
        ZFNetError: not an object, unknown or missing fields, or any field's error.
    """
    assert is_dataclass(cls)
    prefix = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise ZFNetError(f"{prefix}{what}s must be an object (a table of names and values), "
                         f"got {describe_value(data)}")
    valid = {f.name for f in fields(cls)}
    keys = list(data)
    unknown = sorted(str(k) for k in keys if k not in valid)
    if unknown:
        raise ZFNetError(f"{prefix}unknown {what}(s) {', '.join(unknown[:5])}; valid: {', '.join(sorted(valid))}")
    missing = [f.name for f in fields(cls) if f.init and f.name not in data
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ZFNetError(f"{prefix}{what}(s) {', '.join(missing)} missing")
    try:
        return cls(**{k: data[k] for k in keys})
    except ZFNetError as err:
        raise ZFNetError(f"{prefix}{err}") from None


def env_seconds(name: str, default: float, *, zero: bool = False) -> float:
    """A number of seconds from the environment variable ``name`` (``default`` where it is unset).

    Raises:
        ZFNetError: not a number, or below 0 (with ``zero``) or not above 0 (without).
    """
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise ZFNetError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (value >= 0 if zero else value > 0) or not math.isfinite(value):
        raise ZFNetError(f"{name} must be {'0 or more' if zero else 'positive'} seconds, got {raw!r}")
    return value
