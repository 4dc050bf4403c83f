"""TOML tables as strict pydantic models, and their refusals as one-line ``ConfigError``s.

:class:`Section` is the base of every table of the run config (``prunehw.core.config``) and of the sweep file
(``prunehw.explore.sweep``): strict types (an int is a number, a bool is not an int), unknown keys refused,
instances frozen. :func:`config_error` is the one place where pydantic's errors become the project's
``ConfigError``, worded as the TOML file spells the key, so no other module sees a pydantic exception.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Callable, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from prunehw.core.errors import ConfigError

__all__ = ["Section", "config_error", "must", "TupleOf", "Positive", "NonNegative", "PositiveFloat"]


def must(ok: Callable[[Any], bool], detail: str) -> AfterValidator:
    """A check after the type check: refused with ``detail`` (worded as :func:`config_error` says) unless ``ok``."""
    def check(value):
        if not ok(value):
            raise ValueError(detail)
        return value
    return AfterValidator(check)


T = TypeVar("T")
#: a tuple field that the TOML file writes as an array (a list; its items stay strictly typed)
TupleOf = Annotated[tuple[T, ...], BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]

#: pydantic's type errors, worded as the file's reader knows the types
_KINDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
          "string_type": "a string", "list_type": "a list", "tuple_type": "a list", "dict_type": "a table",
          "model_type": "a table", "model_attributes_type": "a table"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _bare(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and ``| None``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _type_at(root: type, loc: tuple) -> Any:
    """The annotation at ``loc`` below the model ``root``; None where it cannot be followed."""
    tp = root
    for part in loc:
        tp, origin = _bare(tp), typing.get_origin(_bare(tp))
        if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif origin in (tuple, list) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return _bare(tp)


def config_error(exc: ValidationError, root: type[Section]) -> ConfigError:
    """pydantic's first error, validating ``root``, as one line naming the key and what is allowed.

    A validator's ``ValueError`` reads after the key and, for a single value, after ``= value``: a message
    starting with ';' follows the value directly (``run.name = 'a/b'; allowed: ...``), another one after a
    space (``variants[0].ratio = 1.0 is out of range; ...``); for a table or list, ``key: message``.
    """
    err = exc.errors()[0]
    kind, loc, value, ctx = err["type"], tuple(err["loc"]), err.get("input"), err.get("ctx") or {}
    at = root._spell(loc)
    if kind == "extra_forbidden":
        parent = _type_at(root, loc[:-1])
        allowed = ", ".join(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else "?"
        word = parent._unknown if isinstance(parent, type) and issubclass(parent, Section) else "key"
        msg = f"[{root._spell(loc[:-1])}] unknown {word} {loc[-1]!r}; allowed: {allowed}"
    elif kind == "missing":
        msg = f"{at} is missing; it has no default"
    elif kind in _KINDS:
        msg = f"{at} must be {_KINDS[kind]}, got {type(value).__name__} {value!r}"
    elif kind in _BOUNDS:
        msg = f"{at} = {value!r} must be {_BOUNDS[kind]} {next(iter(ctx.values()))}"
    elif kind == "too_short":
        msg = f"{at} must be a non-empty list"
    elif kind == "literal_error":
        choices = typing.get_args(_type_at(root, loc)) or (ctx.get("expected"),)
        msg = f"{at} = {value!r} is unknown; allowed: {', '.join(map(str, choices))}"
    elif kind == "value_error":
        detail = str(ctx.get("error", err["msg"].removeprefix("Value error, ")))
        if isinstance(value, (dict, list, tuple, BaseModel)):
            msg = f"{at}: {detail}"
        else:
            msg = f"{at} = {value!r}{'' if detail.startswith(';') else ' '}{detail}"
    else:
        msg = f"{at}: {err['msg']}"
    return ConfigError(" ".join(msg.split("\n")))


class Section(BaseModel):
    """A TOML table: strict types, unknown keys refused, frozen; refusals are one-line ``ConfigError``s."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    #: how the TOML file names this table when it is validated on its own (as a part of another, by its key)
    _section: ClassVar[str] = ""
    #: what the refusal of an unknown key calls it
    _unknown: ClassVar[str] = "key"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self)) from None

    # Marked as pydantic's own __init__ (as pydantic's RootModel marks its): otherwise pydantic would call it
    # for a table inside another, and the refusal would name the key without its parents (filters, not
    # network.layers[2].filters). Only the outermost table converts the error.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, raw: Any):
        """Validate a parsed table (a dict)."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise config_error(exc, cls) from None

    @classmethod
    def _spell(cls, loc: tuple, section: str | None = None) -> str:
        """An error location as the TOML file spells it: ``network.layers[2].filters``."""
        out = cls._section if section is None else section
        for part in loc:
            if isinstance(part, str) and not part.isidentifier():
                continue        # (the member of a union that was tried, e.g. ``constrained-int``: not a key)
            out = f"{out}[{part}]" if isinstance(part, int) else f"{out}.{part}" if out else str(part)
        return out

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen; make a changed copy with replace({name}=...)")

    def replace(self, **changes: Any):
        """A copy with ``changes``, validated like the file (a bad value is a ``ConfigError``)."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})

    def to_dict(self) -> dict:
        """Plain JSON-able data: dicts, lists (for tuples) and scalars."""
        return _plain(self.model_dump())


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
