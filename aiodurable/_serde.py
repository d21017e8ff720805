"""How values become bytes in the database and come back.

Workflow inputs, step outputs, workflow outputs, messages and events are stored as bytes with the
name of the serializer that wrote them (``"json"``, ``"pickle"`` or a plug-in's own), so a row is
always read back with the format it was written in.

JSON (orjson) is the default. It encodes ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``,
lists, tuples, dicts (keys may be ``str``, ``int``, ``float``, ``bool``, ``None``, enums, UUIDs,
dates and times), dataclasses, enums, ``datetime``/``date``/``time``, ``UUID``, and through this
module also ``Decimal`` (as a string), ``set``/``frozenset`` (as a list), ``bytes`` (as base64
text), ``timedelta`` (as seconds), ``typing.NamedTuple`` (as an object) and any object with a
``model_dump()`` method (pydantic v2 models, in JSON mode). Anything else raises
`SerializationError` when encoded, so nothing is written.

JSON alone forgets types (a ``Receipt`` comes back as a dict), so decoding is guided by the type
annotation of the function the value belongs to: a step annotated ``-> Receipt`` returns a
``Receipt`` on replay too. `convert` lists the annotations it understands. Without an annotation
the plain JSON value comes back. A union such as ``int | str`` keeps a value that is exactly one of
its plain JSON types as it is (``"3"`` stays ``"3"``), otherwise takes the first member that
accepts it. JSON has no NaN or infinity (orjson would write them as ``null``, and replay would
see ``None``), so a value holding one, anywhere, raises `SerializationError` when encoded.

Pickle (`PickleSerializer`) is used only when the application asks for it; it restores any
picklable value exactly, and must only read data the application itself wrote.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import pickle
import sys
import traceback
import types
import typing
import uuid
import weakref
from collections import abc
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import orjson

from aiodurable._error_bounds import bounded_record
from aiodurable._exceptions import SerializationError, WorkflowFailed

__all__ = [
    "ErrorRecord",
    "JsonSerializer",
    "PickleSerializer",
    "Serializer",
    "convert",
    "decode",
    "decode_exception",
    "decode_inputs",
    "encode",
    "encode_exception",
    "encode_inputs",
    "error_record",
    "return_hint",
]

_Converter = Callable[[object], object]


class Serializer(Protocol):
    """Turns values into bytes and back; its `name` is recorded with every row it writes."""

    @property
    def name(self) -> str:
        """The format name stored per row: ``"json"``, ``"pickle"`` or a plug-in's own."""
        ...

    def dumps(self, value: object) -> bytes:
        """Encode ``value``; raise any exception if it cannot be encoded."""
        ...

    def loads(self, data: bytes, hint: object) -> object:
        """Decode ``data``, as the type annotation ``hint`` if it can (``None``: no guidance)."""
        ...


def _default(obj: object) -> object:
    """orjson's fallback for the types it does not encode by itself."""
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        try:  # sorted, so that equal sets are equal bytes
            return sorted(obj)  # mixed types raise TypeError, caught below
        except TypeError:
            return list(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):  # a NamedTuple; orjson refuses them
        return obj._asdict()
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and not isinstance(obj, type):  # pydantic v2, duck-typed: no import
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(obj).__qualname__}")


class JsonSerializer:
    """The default serializer: orjson, decoded as the type annotation says (see `convert`)."""

    @property
    def name(self) -> str:
        """Always ``"json"``."""
        return "json"

    def dumps(self, value: object) -> bytes:
        """Encode ``value`` as JSON; raises ``TypeError`` for a type JSON cannot hold and
        ``ValueError`` for a NaN or an infinity anywhere in it."""
        data = orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
        # orjson writes NaN and infinities as null; only output that holds a null can hide one.
        if b"null" in data:
            _check_finite(value)
        return data

    def loads(self, data: bytes, hint: object) -> object:
        """Decode JSON ``data`` and convert it to ``hint``."""
        value = orjson.loads(data)
        if hint is None or hint is Any or hint is object:  # the cheap path: no guidance
            return value
        return convert(value, hint)


class _NonFiniteError(ValueError):
    """A NaN or an infinity where JSON needs a number; containers add their step to ``path``."""

    def __init__(self, number: float) -> None:
        super().__init__(number)
        self.number = number
        self.path: list[str] = []

    def __str__(self) -> str:
        where = "".join(reversed(self.path))
        place = f" at ${where}" if where else ""
        return (
            f"{self.number!r}{place} is not a finite number: JSON has no NaN or infinity"
            " (it would be recorded as null, and replay would read None)"
        )


# Types orjson writes without calling `_default` and that hold no float (bool is an int, a
# datetime a date).
_NO_FLOAT = (str, int, type(None), dt.date, dt.time, uuid.UUID)


def _non_finite(number: float, step: str) -> _NonFiniteError:
    exc = _NonFiniteError(number)
    exc.path.append(step)
    return exc


def _check_finite(obj: object) -> None:
    """Raise `_NonFiniteError` if ``obj`` holds a NaN or an infinity where orjson writes it.

    It follows orjson's own walk: dicts (keys too), lists, tuples, enums by value, dataclasses
    by their public attributes, and whatever `_default` turns other objects into. ``x - x`` is
    0.0 for a finite float and NaN for NaN and the infinities.
    """
    if isinstance(obj, float):
        if obj - obj != 0.0:
            raise _NonFiniteError(obj)
    elif isinstance(obj, _NO_FLOAT):
        return
    elif isinstance(obj, dict):
        _check_items(obj.items())
    elif isinstance(obj, list) or type(obj) is tuple:
        _check_items(enumerate(obj), keys=False)
    elif isinstance(obj, enum.Enum):
        _check_finite(obj.value)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        attrs = getattr(obj, "__dict__", None)
        if attrs is None:  # slots: orjson writes the fields
            attrs = {f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}
        _check_items(((k, v) for k, v in attrs.items() if k[:1] != "_"), attributes=True)
    else:
        _check_finite(_default(obj))


def _check_items(
    items: abc.Iterable[tuple[object, object]], *, keys: bool = True, attributes: bool = False
) -> None:
    for key, item in items:
        cls = type(item)
        if cls is float:  # the common cases first, without a call
            if item - item != 0.0:  # type: ignore[operator]  # a float, as just checked
                raise _non_finite(item, f".{key}" if attributes else f"[{key!r}]")  # type: ignore[arg-type]
        elif cls is not str and cls is not int and item is not None and cls is not bool:
            try:
                _check_finite(item)
            except _NonFiniteError as exc:
                exc.path.append(f".{key}" if attributes else f"[{key!r}]")
                raise
        if keys and type(key) is not str:
            raw = key.value if isinstance(key, enum.Enum) else key
            if isinstance(raw, float) and raw - raw != 0.0:
                raise _non_finite(raw, " (as a key)")


class PickleSerializer:
    """Pickle, for values JSON cannot hold; opt-in only, since unpickling runs arbitrary code."""

    @property
    def name(self) -> str:
        """Always ``"pickle"``."""
        return "pickle"

    def dumps(self, value: object) -> bytes:
        """Pickle ``value`` with the highest protocol."""
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes, hint: object) -> object:
        """Unpickle ``data``; ``hint`` is ignored, since pickle restores the exact types."""
        return pickle.loads(data)


_FIX = (
    "Make it JSON-encodable (a dataclass, enum, datetime/date/time, timedelta, UUID, Decimal,"
    " bytes, set, NamedTuple, pydantic model, or lists and dicts of these),"
    " or choose the pickle serializer."
)


def _type_name(value: object) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


_FIX_NON_FINITE = (
    "Record None, a finite number or a string such as 'inf' in its place, or choose the pickle"
    " serializer."
)


def _encode_error(serializer: Serializer, value: object, what: str, exc: Exception) -> Exception:
    if isinstance(exc, _NonFiniteError):
        return SerializationError(f"cannot encode {what}: {exc}. {_FIX_NON_FINITE}")
    fix = _FIX if serializer.name == "json" else f"({serializer.name!r} serializer)"
    return SerializationError(
        f"cannot encode {what}: a value of type {_type_name(value)} failed ({exc}). {fix}"
    )


def encode(serializer: Serializer, value: object, *, what: str) -> bytes:
    """Encode ``value``; any failure raises `SerializationError` naming ``what`` and the fix.

    ``what`` names the value for the message, e.g. ``"output of step 'shop:charge'"``.
    """
    try:
        return serializer.dumps(value)
    except Exception as exc:
        raise _encode_error(serializer, value, what, exc) from exc


def decode(serializer: Serializer, data: bytes, hint: object, *, what: str) -> object:
    """Decode ``data`` as ``hint`` (a type annotation, ``None`` for none); failures raise
    `SerializationError` naming ``what``."""
    try:
        return serializer.loads(data, hint)
    except Exception as exc:
        raise SerializationError(f"cannot decode {what}: {exc}") from exc


# --- guided conversion -----------------------------------------------------------------------


class _MismatchError(Exception):
    """A value does not fit its type; containers add their step to ``path`` as it unwinds."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def __str__(self) -> str:
        where = "".join(reversed(self.path))
        return f"{self.message} at ${where}" if where else self.message


def _fail(expected: str, obj: object) -> NoReturn:
    text = repr(obj)
    text = text if len(text) <= 60 else text[:57] + "..."
    raise _MismatchError(f"expected {expected}, got {type(obj).__name__} {text}")


def _hint_name(hint: object) -> str:
    return hint.__qualname__ if isinstance(hint, type) else repr(hint).replace("typing.", "")


def convert(obj: object, hint: object) -> object:
    """Convert the JSON value ``obj`` to the type annotation ``hint``; raises `SerializationError`.

    Understood: ``None``/``Any``/``object`` (as is), dataclasses (unknown keys are an error),
    enums (by value), ``datetime``/``date``/``time`` (ISO text), ``timedelta``, ``UUID``,
    ``Decimal``, ``bytes``, ``int``/``float``/``str``/``bool`` (an ``int`` passes as ``float``),
    ``list``/``tuple``/``set``/``frozenset``/``dict`` and their ``collections.abc`` forms, unions
    and ``Optional``, ``Literal``, ``NewType``, ``TypedDict``, ``Annotated``, ``NamedTuple``,
    classes with ``model_validate`` (pydantic), and subclasses of ``str``/``int``/``float``.
    A value already of the wanted type passes, so converting twice is harmless.
    """
    if hint is None or hint is Any or hint is object:
        return obj
    try:
        return _converter(hint)(obj)
    except _MismatchError as exc:
        raise SerializationError(f"{exc} (converting to {_hint_name(hint)})") from None


# Converters are built once per type, since this runs on every replayed step. Bounded, because
# types made at run time would otherwise pile up; clearing only costs a rebuild.
_CACHE: dict[object, _Converter] = {}
_CACHE_SIZE = 4096


def _converter(hint: object) -> _Converter:
    try:
        return _CACHE[hint]
    except KeyError:
        pass
    except TypeError:  # an unhashable hint, e.g. Annotated with a dict in it
        return _build(hint)
    conv = _build(hint)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[hint] = conv
    return conv


def _identity(obj: object) -> object:
    return obj


def _simple(
    cls: type, expected: str, accepts: type | tuple[type, ...], parse: Callable[[Any], object]
) -> _Converter:
    """A converter for a scalar type that JSON holds as ``accepts`` and ``parse`` turns into it."""

    def conv(obj: object) -> object:
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, accepts) and not isinstance(obj, bool):
            try:
                return parse(obj)
            except (ValueError, ArithmeticError):
                pass
        _fail(expected, obj)

    return conv


def _to_decimal(value: str | float) -> decimal.Decimal:
    return decimal.Decimal(str(value))  # via text, so that 0.1 is 0.1, not its binary expansion


def _exact(expected: str, accepts: type | tuple[type, ...]) -> _Converter:
    def conv(obj: object) -> object:
        if isinstance(obj, accepts):
            return obj  # kept as is: an int where a float is expected stays an int, as it was live
        _fail(expected, obj)

    return conv


_SCALARS: dict[object, _Converter] = {
    int: _exact("int", int),
    float: _exact("float", (float, int)),
    str: _exact("str", str),
    bool: _exact("bool", bool),
    type(None): _exact("null", type(None)),
    dt.datetime: _simple(dt.datetime, "an ISO datetime", str, dt.datetime.fromisoformat),
    dt.date: _simple(dt.date, "an ISO date", str, dt.date.fromisoformat),
    dt.time: _simple(dt.time, "an ISO time", str, dt.time.fromisoformat),
    dt.timedelta: _simple(dt.timedelta, "seconds", (int, float), lambda s: dt.timedelta(seconds=s)),
    uuid.UUID: _simple(uuid.UUID, "a UUID", str, uuid.UUID),
    decimal.Decimal: _simple(decimal.Decimal, "a decimal", (str, int, float), _to_decimal),
    bytes: _simple(bytes, "base64 text", str, lambda s: base64.b64decode(s, validate=True)),
    bytearray: _simple(
        bytearray, "base64 text", str, lambda s: bytearray(base64.b64decode(s, validate=True))
    ),
}
_LIST_ORIGINS = {list, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection}
_SET_ORIGINS: dict[object, type] = {
    set: set,
    frozenset: frozenset,
    abc.Set: frozenset,
    abc.MutableSet: set,
}
_DICT_ORIGINS = {dict, abc.Mapping, abc.MutableMapping}
_WRAPPERS = {typing.ClassVar, typing.Final, typing.Required, typing.NotRequired}
_SEQUENCES = (list, tuple, set, frozenset)  # tuples and sets only reach here from pickle


def _build(hint: object) -> _Converter:
    if hint is None:  # inside a type, as in `list[None]`, None stands for NoneType
        return _SCALARS[type(None)]
    if isinstance(hint, type) and hint in _SCALARS:
        return _SCALARS[hint]
    if hint is Any or hint is object or isinstance(hint, str | typing.ForwardRef | typing.TypeVar):
        return _identity  # unresolved or unconstrained: no guidance
    if isinstance(hint, typing.NewType):
        return _converter(hint.__supertype__)
    if type(hint).__name__ == "TypeAliasType":  # `type X = ...` (Python 3.12+)
        return _converter(getattr(hint, "__value__", Any))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated or origin in _WRAPPERS:
        return _converter(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return _union(hint, args)
    if origin is typing.Literal:
        return _literal(args)
    if origin in _LIST_ORIGINS:
        return _sequence(_converter(args[0]) if args else _identity, None)
    if origin in _SET_ORIGINS:
        return _sequence(_converter(args[0]) if args else _identity, _SET_ORIGINS[origin])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_converter(args[0]), tuple)
        return _fixed_tuple([_converter(a) for a in args])
    if origin in _DICT_ORIGINS:
        key, value = args if len(args) == 2 else (Any, Any)
        return _mapping(_key_converter(key), _converter(value))
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):  # a generic, `Box[int]`
        typevars = dict(zip(getattr(origin, "__parameters__", ()), args, strict=False))
        return _record(origin, positional=False, typevars=typevars)
    if origin is not None:  # `Callable[...]`, `type[X]`... JSON cannot hold them: no guidance
        return _identity
    if not isinstance(hint, type):
        return _identity
    return _class(hint)


def _class(cls: type) -> _Converter:
    if issubclass(cls, enum.Enum):
        return _enum(cls)
    if callable(getattr(cls, "model_validate", None)):  # pydantic, duck-typed
        return _model(cls)
    if dataclasses.is_dataclass(cls):
        return _record(cls, positional=False)
    if typing.is_typeddict(cls):
        return _typed_dict(cls)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _record(cls, positional=True)
    if cls is list or cls is tuple or cls is set or cls is frozenset:
        return _sequence(_identity, None if cls is list else cls)
    if cls is dict:
        return _mapping(_identity, _identity)
    for base in (str, int, float, list, dict):
        if issubclass(cls, base):  # a subclass JSON holds as its base, e.g. `class Sku(str)`
            return _simple(cls, cls.__qualname__, base, cls)
    try:
        isinstance(None, cls)
    except TypeError:  # a protocol that is not runtime-checkable: nothing to check
        return _identity
    return _exact(cls.__qualname__, cls)


def _enum(cls: type[enum.Enum]) -> _Converter:
    def conv(obj: object) -> object:
        if isinstance(obj, cls):
            return obj
        try:
            return cls(obj)
        except (ValueError, TypeError):
            pass
        _fail(f"a value of {cls.__qualname__}", obj)

    return conv


def _model(cls: type) -> _Converter:
    validate = getattr(cls, "model_validate")  # noqa: B009 - a duck-typed pydantic method

    def conv(obj: object) -> object:
        if isinstance(obj, cls):
            return obj
        try:
            return validate(obj)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise _MismatchError(f"invalid {cls.__qualname__}: {exc}") from None

    return conv


def _class_hints(cls: type) -> dict[str, object]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an unresolvable forward reference: keep what is not a string
        annotations = getattr(cls, "__annotations__", {})
        return {k: v for k, v in annotations.items() if not isinstance(v, str)}


def _substitute(hint: object, typevars: dict[object, object]) -> object:
    """``hint`` with the type variables of a generic record replaced by its arguments."""
    if isinstance(hint, typing.TypeVar):
        return typevars.get(hint, Any)
    params = getattr(hint, "__parameters__", ())
    if not typevars or not params:
        return hint
    try:
        # A generic alias such as list[T] takes its arguments by subscription.
        return hint[tuple(typevars.get(p, Any) for p in params)]  # type: ignore[index]
    except TypeError:
        return hint


def _record(
    cls: type, *, positional: bool, typevars: dict[object, object] | None = None
) -> _Converter:
    """A dataclass (from an object) or a NamedTuple (from an object or an array)."""
    name = cls.__qualname__
    # Field converters are built on first use: a recursive type (a tree node holding a list of
    # nodes) would otherwise recurse while it is being built.
    fields: dict[str, _Converter] | None = None
    skipped: frozenset[str] = frozenset()

    def conv(obj: object) -> object:
        nonlocal fields, skipped
        if isinstance(obj, cls):
            return obj
        if fields is None:
            hints = _class_hints(cls)
            if positional:
                names = list(getattr(cls, "_fields", ()))
            else:  # init=False fields are written by orjson but set by the class itself
                names = [f.name for f in dataclasses.fields(cls) if f.init]
                skipped = frozenset(f.name for f in dataclasses.fields(cls) if not f.init)
            fields = {n: _converter(_substitute(hints.get(n, Any), typevars or {})) for n in names}
        if positional and isinstance(obj, list) and len(obj) <= len(fields):
            obj = dict(zip(fields, obj, strict=False))
        if not isinstance(obj, dict):
            _fail(f"an object for {name}", obj)
        kwargs: dict[str, object] = {}
        for key, value in obj.items():
            field = fields.get(key)
            if field is None:
                if key in skipped:
                    continue
                raise _MismatchError(f"unexpected key {key!r} for {name}")
            try:
                kwargs[key] = field(value)
            except _MismatchError as exc:
                exc.path.append(f".{key}")
                raise
        try:
            return cls(**kwargs)
        except Exception as exc:  # a missing field, or a check in __post_init__ / __new__
            raise _MismatchError(f"cannot build {name}: {exc}") from None

    return conv


def _typed_dict(cls: type) -> _Converter:
    fields: dict[str, _Converter] | None = None

    def conv(obj: object) -> object:
        nonlocal fields
        if not isinstance(obj, dict):
            _fail(f"an object for {cls.__qualname__}", obj)
        if fields is None:
            fields = {k: _converter(v) for k, v in _class_hints(cls).items()}
        out = dict(obj)
        for key, field in fields.items():
            if key in out:
                try:
                    out[key] = field(out[key])
                except _MismatchError as exc:
                    exc.path.append(f".{key}")
                    raise
        return out

    return conv


def _union(hint: object, members: tuple[object, ...]) -> _Converter:
    # A value that is exactly one of the plain JSON member types stays as it is.
    exact = frozenset(m for m in members if m in (int, float, str, bool, list, dict, type(None)))
    convs = [_converter(m) for m in members]

    def conv(obj: object) -> object:
        if type(obj) in exact:
            return obj
        for member in convs:
            try:
                return member(obj)
            except _MismatchError:
                continue
        _fail(_hint_name(hint), obj)

    return conv


def _literal(values: tuple[object, ...]) -> _Converter:
    def conv(obj: object) -> object:
        for value in values:
            raw = value.value if isinstance(value, enum.Enum) else value
            if obj is value or (obj == raw and type(obj) is type(raw)):
                return value
        _fail(f"one of {values!r}", obj)

    return conv


def _sequence(item: _Converter, factory: type | None) -> _Converter:
    """``list[X]`` (``factory`` None), ``tuple[X, ...]``, ``set[X]`` or ``frozenset[X]``."""

    def conv(obj: object) -> object:
        if not isinstance(obj, _SEQUENCES):
            _fail("an array", obj)
        if item is _identity:
            if factory is None:
                return obj if type(obj) is list else list(obj)
            return factory(obj)
        try:
            items = [item(x) for x in obj]
        except _MismatchError:
            _locate(item, enumerate(obj))
            raise
        return items if factory is None else factory(items)

    return conv


def _locate(item: _Converter, entries: abc.Iterable[tuple[object, object]]) -> None:
    """Rerun a failed conversion item by item, to name the position that failed."""
    for where, value in entries:
        try:
            item(value)
        except _MismatchError as exc:
            exc.path.append(f"[{where!r}]")
            raise


def _fixed_tuple(items: list[_Converter]) -> _Converter:
    def conv(obj: object) -> object:
        if not isinstance(obj, _SEQUENCES) or len(obj) != len(items):
            _fail(f"an array of {len(items)}", obj)
        try:
            return tuple(item(x) for item, x in zip(items, obj, strict=True))
        except _MismatchError:
            for i, (item, x) in enumerate(zip(items, obj, strict=True)):
                _locate(item, [(i, x)])
            raise

    return conv


def _key_converter(hint: object) -> _Converter:
    """JSON object keys are text: ``int``, ``UUID``, enum... keys are parsed back from it."""
    if hint is str or hint is Any or hint is object:
        return _identity
    base = _converter(hint)

    def conv(key: object) -> object:
        try:
            return base(key)
        except _MismatchError:
            if not isinstance(key, str):
                raise
        try:  # "3" for an int key, "true" for a bool key, "1" for an IntEnum key...
            parsed = orjson.loads(key)
        except orjson.JSONDecodeError:
            _fail(f"a key of {_hint_name(hint)}", key)
        return base(parsed)

    return conv


def _mapping(key: _Converter, value: _Converter) -> _Converter:
    def conv(obj: object) -> object:
        if not isinstance(obj, dict):
            _fail("an object", obj)
        if key is _identity and value is _identity:
            return obj
        try:
            return {key(k): value(v) for k, v in obj.items()}
        except _MismatchError:
            _locate(key, ((k, k) for k in obj))
            _locate(value, obj.items())
            raise

    return conv


# --- function inputs and outputs -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _FunctionInfo:
    """A function's signature and parameter converters, built once per function."""

    signature: inspect.Signature
    returns: object
    positional: tuple[tuple[str, _Converter], ...]
    var_positional: tuple[str, _Converter] | None
    keyword: dict[str, _Converter]
    var_keyword: _Converter | None


class _Annotations:
    """Stands in for a function so `typing.get_type_hints` resolves one annotation at a time."""

    def __init__(self, annotations: dict[str, object]) -> None:
        self.__annotations__ = annotations


def _function_hints(fn: Callable[..., object]) -> dict[str, object]:
    target = inspect.unwrap(fn)
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = type(target).__call__  # a callable object
    try:
        return typing.get_type_hints(target)
    except Exception:  # one bad forward reference must not cost the others their guidance
        pass
    annotations = getattr(target, "__annotations__", None)
    globalns = getattr(target, "__globals__", {})
    hints: dict[str, object] = {}
    for name, annotation in (annotations or {}).items():
        try:
            shim = _Annotations({name: annotation})
            hints[name] = typing.get_type_hints(shim, globalns=globalns)[name]
        except Exception:
            continue
    return hints


def _build_info(fn: Callable[..., object]) -> _FunctionInfo:
    signature = inspect.signature(fn)
    hints = _function_hints(fn)

    def conv(name: str) -> _Converter:
        return _converter(hints[name]) if name in hints else _identity

    kind = inspect.Parameter
    params = signature.parameters.values()
    var_pos = [p.name for p in params if p.kind is kind.VAR_POSITIONAL]
    var_kw = [p.name for p in params if p.kind is kind.VAR_KEYWORD]
    return _FunctionInfo(
        signature=signature,
        returns=hints.get("return"),
        positional=tuple(
            (p.name, conv(p.name))
            for p in params
            if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
        ),
        var_positional=(var_pos[0], conv(var_pos[0])) if var_pos else None,
        keyword={
            p.name: conv(p.name)
            for p in params
            if p.kind in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)
        },
        var_keyword=conv(var_kw[0]) if var_kw else None,
    )


# Keyed weakly by the function, so that functions made at run time (and their types) can go.
# A bound method is keyed by its function, since each attribute access makes a new method object.
_FUNCTIONS: weakref.WeakKeyDictionary[object, _FunctionInfo] = weakref.WeakKeyDictionary()
_METHODS: weakref.WeakKeyDictionary[object, _FunctionInfo] = weakref.WeakKeyDictionary()


def _info(fn: Callable[..., object]) -> _FunctionInfo:
    table, key = (_METHODS, fn.__func__) if isinstance(fn, types.MethodType) else (_FUNCTIONS, fn)
    try:
        return table[key]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: build it every time
        return _build_info(fn)
    info = table[key] = _build_info(fn)
    return info


def return_hint(fn: Callable[..., object]) -> object:
    """``fn``'s resolved return annotation, or ``None`` if it has none or it cannot be resolved.

    ``-> None`` is reported as ``NoneType``, so it is told apart from "no annotation".
    """
    return _info(fn).returns


def encode_inputs(
    serializer: Serializer,
    fn: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    *,
    what: str,
) -> bytes:
    """Bind ``args``/``kwargs`` to ``fn`` and encode them as ``{"args": [...], "kwargs": {...}}``.

    A call that does not fit the signature raises ``TypeError``; a value that cannot be encoded
    raises `SerializationError` naming the parameter, e.g. ``argument 'order' of {what}``.
    Defaults are not recorded: they belong to the code, whose version is recorded separately.
    """
    bound = _info(fn).signature.bind(*args, **kwargs)
    payload = {"args": list(bound.args), "kwargs": bound.kwargs}
    try:
        return serializer.dumps(payload)
    except Exception as exc:
        for name, value in _arguments(bound):
            try:
                serializer.dumps(value)
            except Exception as inner:
                raise _encode_error(
                    serializer, value, f"argument {name!r} of {what}", inner
                ) from inner
        raise _encode_error(serializer, payload, f"the inputs of {what}", exc) from exc


def _arguments(bound: inspect.BoundArguments) -> abc.Iterator[tuple[str, object]]:
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            yield from ((f"*{name}[{i}]", v) for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            yield from value.items()
        else:
            yield name, value


def decode_inputs(
    serializer: Serializer, fn: Callable[..., object], data: bytes, *, what: str | None = None
) -> tuple[tuple[object, ...], dict[str, object]]:
    """Decode what `encode_inputs` wrote, each value converted as its parameter is annotated."""
    what = what or f"{getattr(fn, '__qualname__', fn)!r}"
    payload = decode(serializer, data, None, what=f"the inputs of {what}")
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("args"), list | tuple)
        or not isinstance(payload.get("kwargs") or {}, dict)
    ):
        raise SerializationError(f"cannot decode the inputs of {what}: not an inputs record")
    raw_args, raw_kwargs = payload["args"], payload.get("kwargs") or {}
    if isinstance(serializer, PickleSerializer):  # pickle restored the exact types already
        return tuple(raw_args), dict(raw_kwargs)
    info = _info(fn)
    args: list[object] = []
    for i, value in enumerate(raw_args):
        if i < len(info.positional):
            name, conv = info.positional[i]
        elif info.var_positional is not None:
            name, conv = (
                info.var_positional[0] + f"[{i - len(info.positional)}]",
                info.var_positional[1],
            )
        else:
            name, conv = f"#{i}", _identity
        args.append(_convert_argument(conv, value, name, what))
    kwargs: dict[str, object] = {}
    for name, value in raw_kwargs.items():
        conv = info.keyword.get(name) or info.var_keyword or _identity
        kwargs[name] = _convert_argument(conv, value, name, what)
    return tuple(args), kwargs


def _convert_argument(conv: _Converter, value: object, name: str, what: str) -> object:
    try:
        return conv(value)
    except _MismatchError as exc:
        raise SerializationError(f"cannot decode argument {name!r} of {what}: {exc}") from None


# --- exceptions --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """What was recorded of an exception, for listings: ``module:qualname``, message, traceback."""

    type: str
    message: str
    traceback: str


def encode_exception(exc: BaseException) -> bytes:
    """Record ``exc`` as JSON: type, message, traceback text, and its arguments and attributes
    when they are JSON-encodable (so that `decode_exception` can rebuild it), in at most
    ``aiodurable._error_bounds.ERROR_RECORD_LIMIT`` bytes (long texts are clipped, marked)."""
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the failure itself
        message = f"<unprintable {cls.__qualname__}>"
    try:
        reduced = exc.__reduce__()
        args = reduced[1] if isinstance(reduced, tuple) and len(reduced) > 1 else None
    except Exception:
        args = None
    record: dict[str, object] = {
        "type": f"{cls.__module__}:{cls.__qualname__}",
        "message": message,
        "traceback": "".join(traceback.format_exception(exc)),
        # Kept when JSON can hold them, clipped first (see aiodurable._error_bounds).
        "args": list(args) if isinstance(args, tuple) else None,
        "state": dict(exc.__dict__) if exc.__dict__ else None,
    }
    return bounded_record(record, JsonSerializer().dumps)


def _load_record(data: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return raw if isinstance(raw, dict) else {}


def error_record(data: bytes) -> ErrorRecord:
    """The type, message and traceback recorded by `encode_exception`, without rebuilding it."""
    raw = _load_record(data)
    if "type" not in raw:
        return ErrorRecord("unknown", "<an unreadable error record>", "")
    return ErrorRecord(str(raw["type"]), str(raw.get("message", "")), str(raw.get("traceback", "")))


def _resolve_exception_class(name: str) -> type[Exception] | None:
    module_name, _, qualname = name.partition(":")
    # Only a module that is already imported: data in the database never decides what is imported.
    target: object = sys.modules.get(module_name)
    if target is None or not qualname:
        return None
    for part in qualname.split("."):  # "<locals>" in a qualname resolves to nothing
        target = getattr(target, part, None)
    # Exception, not BaseException: re-raising a recorded SystemExit, KeyboardInterrupt or
    # CancelledError in whoever awaits the result would stop or cancel that caller.
    if isinstance(target, type) and issubclass(target, Exception):
        return target
    return None


def _rebuild(cls: type[Exception], args: list[object], state: object) -> Exception | None:
    init = cls.__init__
    if inspect.isfunction(init):  # a Python __init__: its annotations guide the arguments
        params = _info(init).positional[1:]  # without self
        try:
            converted = [conv(a) for (_, conv), a in zip(params, args, strict=False)]
            args = converted + args[len(converted) :]
        except _MismatchError:
            pass  # the raw values may still do
    try:
        exc = cls(*args)
    except Exception:
        return None
    if isinstance(state, dict):
        for key, value in state.items():
            if key not in exc.__dict__:  # what __init__ set from the arguments keeps its type
                exc.__dict__[key] = value
    return exc


def decode_exception(data: bytes, *, workflow_id: str) -> BaseException:
    """Rebuild the exception `encode_exception` recorded, with the recorded traceback as a note.

    The original type comes back only if its module is already imported, the name resolves to an
    ``Exception`` subclass and calling it with the recorded arguments works; otherwise the result
    is a `WorkflowFailed` carrying the recorded type, message and traceback.
    """
    raw, record = _load_record(data), error_record(data)
    cls = _resolve_exception_class(record.type)
    args = raw.get("args")
    exc = _rebuild(cls, args, raw.get("state")) if cls and isinstance(args, list) else None
    if exc is None:
        return WorkflowFailed(workflow_id, record.type, record.message, record.traceback)
    if record.traceback:
        exc.add_note(f"Recorded traceback (workflow {workflow_id!r}):\n{record.traceback}")
    return exc
