"""Tests of aiodurable._serde: JSON and pickle encoding, guided decoding, inputs and exceptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import math
import pickle
import socket
import sys
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    NewType,
    Optional,
    TypedDict,
    TypeVar,
)

import orjson
import pytest

from aiodurable._exceptions import SerializationError, WorkflowFailed
from aiodurable._serde import (
    ErrorRecord,
    JsonSerializer,
    PickleSerializer,
    Serializer,
    convert,
    decode,
    decode_exception,
    decode_inputs,
    encode,
    encode_exception,
    encode_inputs,
    error_record,
    return_hint,
)

JSON = JsonSerializer()
T = TypeVar("T")
PICKLE = PickleSerializer()


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    quantity: int = 1


@dataclasses.dataclass
class Order:
    items: list[Item]
    colors: list[Color]
    shipped_at: Optional[dt.datetime] = None  # noqa: UP045 - Optional is what is under test
    owners: dict[int, uuid.UUID] = dataclasses.field(default_factory=dict)
    total: decimal.Decimal = decimal.Decimal("0")


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Box(Generic[T]):
    content: T


@dataclasses.dataclass
class Bag(Generic[T]):
    items: list[T]
    named: dict[str, T]


class Point(NamedTuple):
    x: int
    y: float


class Movie(TypedDict):
    title: str
    released: dt.date


UserId = NewType("UserId", int)


class Sku(str):
    """A str subclass, which JSON holds as plain text."""


class FakeModel:
    """Duck-types a pydantic v2 model: ``model_dump`` and ``model_validate``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def model_dump(self, *, mode: str = "python") -> dict[str, object]:
        return {"value": self.value, "mode": mode}

    @classmethod
    def model_validate(cls, obj: object) -> FakeModel:
        if not isinstance(obj, dict) or not isinstance(obj.get("value"), int):
            raise ValueError("value must be an int")
        return cls(obj["value"])


class CodeError(Exception):
    """A custom exception whose constructor takes a typed code, not a message."""

    def __init__(self, code: int) -> None:
        super().__init__(f"failed with code {code}")
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code,))


class DeadlineError(Exception):
    """A custom exception with an annotated datetime argument and a later-set attribute."""

    def __init__(self, when: dt.datetime) -> None:
        super().__init__(when)
        self.when = when


def roundtrip(value: object, hint: object) -> object:
    return decode(JSON, encode(JSON, value, what="the value"), hint, what="the value")


# --- encoding and decoding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (None, type(None)),
        (True, bool),
        (42, int),
        (2.5, float),
        ("text", str),
        (Color.GREEN, Color),
        (Level.HIGH, Level),
        (dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=dt.UTC), dt.datetime),
        (dt.datetime(2024, 5, 6, 7, 8, 9), dt.datetime),
        (dt.date(2024, 5, 6), dt.date),
        (dt.time(7, 8, 9, 123), dt.time),
        (dt.timedelta(days=2, seconds=3, microseconds=500), dt.timedelta),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID),
        (decimal.Decimal("12.3400"), decimal.Decimal),
        (b"\x00\xffbytes", bytes),
        ([1, 2, 3], list[int]),
        ((1, "a"), tuple[int, str]),
        ((1, 2, 3), tuple[int, ...]),
        ({1, 2}, set[int]),
        (frozenset({Color.RED}), frozenset[Color]),
        ({1: "a", 2: "b"}, dict[int, str]),
        ({Level.LOW: 1}, dict[Level, int]),
        ({Color.RED: 1}, dict[Color, int]),
        ({dt.date(2024, 1, 1): 1}, dict[dt.date, int]),
        ({True: 1, False: 0}, dict[bool, int]),
        ({1.5: "x"}, dict[float, str]),
        (Item("a", 2), Item),
        (Point(1, 2.5), Point),
        (UserId(7), UserId),
        (Sku("A-1"), Sku),
        ("b", Literal["a", "b"]),
        (Color.RED, Literal[Color.RED]),
        (3, Annotated[int, "meta"]),
        (3, Annotated[int, {"unhashable": "metadata"}]),
        ({uuid.UUID(int=5): 1}, dict[uuid.UUID, int]),
        (Box(Item("a")), Box[Item]),
        (Bag([Color.RED], {"x": Color.GREEN}), Bag[Color]),
        ([Item("a")], Sequence[Item]),
        ({"k": Item("b")}, Mapping[str, Item]),
        (None, Optional[Item]),  # noqa: UP045 - Optional is what is under test
        (Item("c"), Item | None),
    ],
)
def test_round_trip(value: object, hint: object) -> None:
    """Each supported kind comes back equal and of the annotated type."""
    result = roundtrip(value, hint)
    assert result == value
    assert type(result) is type(value)


def test_round_trip_nested_dataclass() -> None:
    """A dataclass holding items, enums, an optional datetime, a dict[int, UUID] and a Decimal."""
    order = Order(
        items=[Item("a", 2), Item("b")],
        colors=[Color.RED, Color.GREEN],
        shipped_at=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        owners={1: uuid.uuid4(), 22: uuid.uuid4()},
        total=decimal.Decimal("19.99"),
    )
    assert roundtrip(order, Order) == order
    unshipped = roundtrip(dataclasses.replace(order, shipped_at=None), Order)
    assert isinstance(unshipped, Order)
    assert unshipped.shipped_at is None


def test_round_trip_recursive_dataclass() -> None:
    """A recursive dataclass (a tree) converts without recursing while its converter is built."""
    tree = Node("root", [Node("a", [Node("a1")]), Node("b")])
    assert roundtrip(tree, Node) == tree


def test_round_trip_typed_dict_and_model() -> None:
    """A TypedDict comes back with converted values; a model_dump object via model_validate."""
    movie: Movie = {"title": "Heat", "released": dt.date(1995, 12, 15)}
    assert roundtrip(movie, Movie) == movie
    model = roundtrip(FakeModel(5), FakeModel)
    assert isinstance(model, FakeModel)
    assert model.value == 5


def test_missing_field_with_default() -> None:
    """A dataclass field absent from the JSON takes its default."""
    assert convert({"sku": "x"}, Item) == Item("x", 1)


def test_unions_prefer_exact_types() -> None:
    """A union keeps a value that is exactly one of its JSON types, else tries members in order."""
    assert roundtrip("3", int | str) == "3"
    assert roundtrip(3, int | str) == 3
    assert roundtrip(3, float | int) == 3
    assert roundtrip(Color.RED, int | Color) is Color.RED
    assert roundtrip(dt.date(2024, 1, 1), int | dt.date) == dt.date(2024, 1, 1)
    assert roundtrip([Item("x")], list[Item] | None) == [Item("x")]


def test_int_accepted_as_float() -> None:
    """An int is acceptable where a float is annotated."""
    assert roundtrip(3, float) == 3


def test_no_hint_returns_plain_json() -> None:
    """Without a hint the plain JSON value comes back, types forgotten."""
    data = encode(JSON, Order([Item("a")], [Color.RED]), what="v")
    plain = decode(JSON, data, None, what="v")
    assert plain == {
        "items": [{"sku": "a", "quantity": 1}],
        "colors": ["red"],
        "shipped_at": None,
        "owners": {},
        "total": "0",
    }
    assert decode(JSON, encode(JSON, (1, 2), what="v"), Any, what="v") == [1, 2]
    assert decode(JSON, encode(JSON, {3}, what="v"), object, what="v") == [3]


@pytest.mark.parametrize("value", [object(), [1, object()], {"k": {"n": object()}}, 2**70])
def test_encode_unsupported_raises(value: object) -> None:
    """A value JSON cannot hold raises SerializationError naming what, the type and the fix."""
    with pytest.raises(SerializationError) as info:
        encode(JSON, value, what="output of step 'shop:charge'")
    message = str(info.value)
    assert "output of step 'shop:charge'" in message
    assert type(value).__qualname__ in message
    assert "pickle serializer" in message
    assert isinstance(info.value, TypeError)


def test_encode_socket_names_its_type() -> None:
    """A socket (a typical resource handle) is refused with its type named."""
    with socket.socket() as sock, pytest.raises(SerializationError, match=r"socket\.socket"):
        encode(JSON, sock, what="message")


@pytest.mark.parametrize(
    ("value", "hint", "match"),
    [
        ("3", int, r"expected int, got str '3'"),
        (3, str, r"expected str"),
        ("purple", Color, r"expected a value of Color"),
        ({"sku": "a", "bogus": 1}, Item, r"unexpected key 'bogus' for Item"),
        ({"quantity": 1}, Item, r"cannot build Item"),
        ([1, "x"], list[int], r"at \$\[1\]"),
        ({"items": [{"sku": 5}], "colors": []}, Order, r"at \$\.items\[0\]\.sku"),
        ([1], tuple[int, str], r"expected an array of 2"),
        ({"x": 1}, dict[int, int], r"a key of int"),
        ("c", Literal["a", "b"], r"expected one of"),
        ("not-a-date", dt.date, r"expected an ISO date"),
        ("???", bytes, r"base64"),
        ([1.5], list[int] | None, r"expected list\[int\] \| None"),
        ({"value": "x"}, FakeModel, r"invalid FakeModel"),
    ],
)
def test_decode_wrong_type_raises(value: object, hint: object, match: str) -> None:
    """A recorded value that does not fit the annotation raises SerializationError with a path."""
    data = orjson.dumps(value)
    with pytest.raises(SerializationError, match=match) as info:
        decode(JSON, data, hint, what="output of step 'shop:charge'")
    assert "output of step 'shop:charge'" in str(info.value)


def test_decode_invalid_json_raises() -> None:
    """Bytes that are not JSON raise SerializationError, not orjson's own error."""
    with pytest.raises(SerializationError, match="cannot decode the row"):
        decode(JSON, b"{nope", int, what="the row")


def test_convert_is_idempotent() -> None:
    """Values already of the annotated type pass through, so converting twice is harmless."""
    order = Order([Item("a")], [Color.RED], dt.datetime(2024, 1, 1))
    assert convert(order, Order) is order
    assert convert([Item("a")], list[Item]) == [Item("a")]


def test_pickle_round_trip() -> None:
    """Pickle restores exact types, including those JSON cannot hold, and ignores the hint."""
    value = {"tuple": (1, 2), "complex": 1 + 2j, "order": Order([Item("a")], [Color.RED])}
    data = encode(PICKLE, value, what="v")
    assert decode(PICKLE, data, int, what="v") == value
    assert PICKLE.name == "pickle"
    assert JSON.name == "json"


def test_serializers_satisfy_the_protocol() -> None:
    """Both built-in serializers are Serializers (checked by mypy) with their recorded names."""
    serializers: list[Serializer] = [JSON, PICKLE]
    assert [s.name for s in serializers] == ["json", "pickle"]


def test_pickle_failure_is_serialization_error() -> None:
    """A value pickle refuses raises SerializationError naming the serializer."""
    with pytest.raises(SerializationError, match="'pickle' serializer"):
        encode(PICKLE, lambda: None, what="v")


# --- function hints and inputs -----------------------------------------------------------------


def checkout(order: Order, coupon: str | None = None, *, express: bool = False) -> Item:
    raise NotImplementedError


def variadic(first: int, *rest: Color, **extra: dt.date) -> None:
    raise NotImplementedError


def unresolvable(a: Item, b: NotDefinedAnywhere) -> Item:  # type: ignore[name-defined]  # noqa: F821 - a forward reference that cannot resolve
    raise NotImplementedError


def test_return_hint() -> None:
    """The return annotation resolves from a string; absent is None, ``-> None`` is NoneType."""
    assert return_hint(checkout) is Item
    assert return_hint(variadic) is type(None)
    assert return_hint(lambda: 1) is None

    @functools.wraps(checkout)
    def wrapper(*args: object, **kwargs: object) -> object:
        raise NotImplementedError

    assert return_hint(wrapper) is Item


def test_unresolvable_hint_falls_back() -> None:
    """An annotation that cannot resolve loses its guidance, and only it."""
    assert return_hint(unresolvable) is Item
    data = encode_inputs(JSON, unresolvable, (Item("a"), {"raw": 1}), {}, what="step 'u'")
    args, _ = decode_inputs(JSON, unresolvable, data)
    assert args == (Item("a"), {"raw": 1})


def test_inputs_round_trip_with_defaults_and_keywords() -> None:
    """Positional and keyword arguments come back converted; defaults are not recorded."""
    order = Order([Item("a", 3)], [Color.GREEN])
    data = encode_inputs(
        JSON, checkout, (order,), {"express": True}, what="workflow 'shop:checkout'"
    )
    assert orjson.loads(data) == {
        "args": [orjson.loads(JSON.dumps(order))],
        "kwargs": {"express": True},
    }
    args, kwargs = decode_inputs(JSON, checkout, data)
    assert args == (order,)
    assert kwargs == {"express": True}
    data = encode_inputs(JSON, checkout, (), {"order": order, "coupon": "X"}, what="w")
    assert decode_inputs(JSON, checkout, data) == ((order, "X"), {})


def test_inputs_variadic() -> None:
    """*args and **kwargs values are converted per their annotations."""
    data = encode_inputs(
        JSON, variadic, (1, Color.RED, Color.GREEN), {"day": dt.date(2024, 2, 3)}, what="w"
    )
    args, kwargs = decode_inputs(JSON, variadic, data)
    assert args == (1, Color.RED, Color.GREEN)
    assert kwargs == {"day": dt.date(2024, 2, 3)}


def test_inputs_bound_method() -> None:
    """A bound method's inputs bind without ``self``."""

    class Shop:
        def buy(self, item: Item) -> None:
            raise NotImplementedError

    method = Shop().buy
    data = encode_inputs(JSON, method, (Item("z"),), {}, what="w")
    assert decode_inputs(JSON, Shop().buy, data) == ((Item("z"),), {})


def test_inputs_bad_binding_raises_type_error() -> None:
    """A call that does not fit the signature raises TypeError, as Python would."""
    with pytest.raises(TypeError):
        encode_inputs(JSON, checkout, (), {}, what="w")
    with pytest.raises(TypeError):
        encode_inputs(JSON, checkout, (1, 2, 3), {}, what="w")
    with pytest.raises(TypeError):
        encode_inputs(JSON, checkout, (1,), {"nope": 1}, what="w")


def test_inputs_unencodable_names_parameter() -> None:
    """An argument JSON cannot hold is named by its parameter."""
    with pytest.raises(SerializationError, match=r"argument 'coupon' of workflow 'shop:checkout'"):
        encode_inputs(JSON, checkout, (1, object()), {}, what="workflow 'shop:checkout'")
    with pytest.raises(SerializationError, match=r"argument '\*rest\[1\]' of w"):
        encode_inputs(JSON, variadic, (1, Color.RED, object()), {}, what="w")


def test_inputs_wrong_recorded_type_names_parameter() -> None:
    """A recorded argument that no longer fits its annotation is named when decoded."""
    data = orjson.dumps({"args": [{"items": "x", "colors": []}], "kwargs": {}})
    with pytest.raises(SerializationError, match=r"argument 'order' of 'checkout'.*\$\.items"):
        decode_inputs(JSON, checkout, data, what="'checkout'")
    with pytest.raises(SerializationError, match="not an inputs record"):
        decode_inputs(JSON, checkout, b"[1]")


def test_inputs_pickle() -> None:
    """With pickle, inputs come back exactly, without conversion."""
    data = encode_inputs(PICKLE, variadic, (1, Color.RED), {"d": dt.date(2024, 1, 1)}, what="w")
    assert decode_inputs(PICKLE, variadic, data) == ((1, Color.RED), {"d": dt.date(2024, 1, 1)})


# --- NaN and infinities -------------------------------------------------------------------------


class Ratio(float, enum.Enum):
    """A float enum, which orjson writes as its value."""

    UNKNOWN = math.nan


class Gauge(enum.Enum):
    EMPTY = 0.0
    BROKEN = -math.inf


@dataclasses.dataclass(slots=True)
class Reading:
    sensor: str
    value: float | None = None
    _raw: float = 0.0  # orjson leaves out attributes whose name starts with "_"


@dataclasses.dataclass
class Sample:
    values: list[float]


def _with_extra(extra: object) -> Sample:
    sample = Sample([1.0])
    sample.extra = extra  # type: ignore[attr-defined]  # orjson writes __dict__, extras too
    return sample


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (math.nan, "nan is not a finite number"),
        (math.inf, "inf is not a finite number"),
        (-math.inf, "-inf is not a finite number"),
        ([1.0, 2, -math.inf], "-inf at $[2] is"),
        ((1.0, math.nan), "nan at $[1] is"),
        ({"a": {"b": [None, math.nan]}}, "nan at $['a']['b'][1] is"),
        ({"a": {math.inf: "x"}}, "inf at $['a'] (as a key) is"),
        ({Gauge.BROKEN: 1}, "-inf at $ (as a key) is"),
        (Ratio.UNKNOWN, "<Ratio.UNKNOWN: nan> is"),
        ([Gauge.EMPTY, Gauge.BROKEN], "-inf at $[1] is"),
        (Reading("t1", math.inf), "inf at $.value is"),
        ([Item("a"), Sample([0.5, math.nan])], "nan at $[1].values[1] is"),
        (_with_extra(math.nan), "nan at $.extra is"),
        (Point(1, math.nan), "nan at $['y'] is"),
        ({2.0, math.inf}, "inf at $[1] is"),
        (FakeModel(math.nan), "nan at $['value'] is"),  # type: ignore[arg-type]
    ],
)
def test_non_finite_floats_are_refused_where_they_are(value: object, where: str) -> None:
    """A NaN or an infinity anywhere orjson would write it as null raises SerializationError
    naming the value, its place and the fix, instead of being recorded as null."""
    with pytest.raises(SerializationError) as caught:
        encode(JSON, value, what="the result of step 'shop:charge'")
    message = str(caught.value)
    assert message.startswith("cannot encode the result of step 'shop:charge': ")
    assert where in message
    assert "JSON has no NaN or infinity" in message and "pickle" in message
    with pytest.raises(ValueError, match="not a finite number"):
        JSON.dumps(value)


def test_non_finite_inputs_name_the_argument_and_none_still_encodes() -> None:
    """A NaN in a workflow's arguments is named by its parameter and its place in it; None,
    the text "null" and private attributes are no NaN, and pickle keeps NaN as it is."""
    value = [None, "null", {"null": None}, Reading("t", None, math.nan), Sample([1.5])]
    assert orjson.loads(encode(JSON, value, what="v")) == [
        None,
        "null",
        {"null": None},
        {"sensor": "t", "value": None},
        {"values": [1.5]},
    ]
    restored = pickle.loads(encode(PICKLE, [math.nan, math.inf], what="v"))
    assert math.isnan(restored[0]) and restored[1] == math.inf
    with pytest.raises(
        SerializationError,
        match=r"argument 'coupon' of workflow 'shop:checkout': nan at \$\['rate'\] is not",
    ):
        encode_inputs(JSON, checkout, (1, {"rate": math.nan}), {}, what="workflow 'shop:checkout'")
    with pytest.raises(SerializationError, match=r"argument '\*rest\[0\]' of w: inf is not"):
        encode_inputs(JSON, variadic, (1, math.inf), {}, what="w")


# --- exceptions ---------------------------------------------------------------------------------


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as the runtime would catch it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_builtin_exception_round_trip() -> None:
    """A ValueError with arguments comes back as a ValueError, the traceback attached as a note."""
    exc = decode_exception(encode_exception(raised(ValueError("bad", 3))), workflow_id="wf-1")
    assert type(exc) is ValueError
    assert exc.args == ("bad", 3)
    notes = getattr(exc, "__notes__", [])
    assert len(notes) == 1
    assert "wf-1" in notes[0]
    assert "test_serde.py" in notes[0]
    assert "raise exc" in notes[0]


def test_custom_exception_round_trip() -> None:
    """A custom exception is rebuilt through its __reduce__ arguments and keeps its attributes."""
    original = raised(CodeError(42))
    original.add_note("an earlier note")
    exc = decode_exception(encode_exception(original), workflow_id="wf-2")
    assert isinstance(exc, CodeError)
    assert exc.code == 42
    assert str(exc) == "failed with code 42"
    assert getattr(exc, "__notes__", [])[0] == "an earlier note"


def test_custom_exception_arguments_follow_annotations() -> None:
    """Recorded arguments convert to the constructor's annotations; later attributes come back."""
    when = dt.datetime(2024, 3, 4, 5, 6, tzinfo=dt.UTC)
    original = DeadlineError(when)
    original.attempts = 3  # type: ignore[attr-defined]  # set after construction, on purpose
    exc = decode_exception(encode_exception(original), workflow_id="wf")
    assert isinstance(exc, DeadlineError)
    assert exc.when == when
    assert getattr(exc, "attempts", None) == 3


def test_exception_of_unimported_module_is_workflow_failed() -> None:
    """An exception of a module not imported comes back as WorkflowFailed, never importing it."""
    module = types.ModuleType("aiodurable_test_ghost")
    ghost = type("GhostError", (Exception,), {"__module__": module.__name__})
    data = encode_exception(raised(ghost("boo")))
    assert module.__name__ not in sys.modules
    exc = decode_exception(data, workflow_id="wf-3")
    assert isinstance(exc, WorkflowFailed)
    assert exc.workflow_id == "wf-3"
    assert exc.error_type == "aiodurable_test_ghost:GhostError"
    assert exc.error_message == "boo"
    assert "raise exc" in exc.traceback_text
    assert module.__name__ not in sys.modules


def local_error() -> Exception:
    """An exception whose class lives in a function, so its qualname cannot be resolved."""

    class LocalError(Exception):
        pass

    return LocalError("local")


@pytest.mark.parametrize(
    "exc",
    [
        KeyboardInterrupt(),  # a BaseException: re-raising it would interrupt the caller
        ExceptionGroup("many", [ValueError("a")]),  # its arguments are not JSON
        local_error(),
    ],
)
def test_unrebuildable_exceptions_are_workflow_failed(exc: BaseException) -> None:
    """BaseExceptions, unencodable arguments and local classes come back as WorkflowFailed."""
    result = decode_exception(encode_exception(raised(exc)), workflow_id="wf")
    assert isinstance(result, WorkflowFailed)
    assert result.error_type.endswith(type(exc).__qualname__)


def test_error_record() -> None:
    """error_record reads type, message and traceback; unreadable data does not raise."""
    record = error_record(encode_exception(raised(CodeError(7))))
    assert record.type == f"{__name__}:CodeError"
    assert record.message == "failed with code 7"
    assert "CodeError" in record.traceback
    assert error_record(b"garbage") == ErrorRecord("unknown", "<an unreadable error record>", "")
    assert isinstance(decode_exception(b"garbage", workflow_id="w"), WorkflowFailed)


def test_encode_exception_is_always_json() -> None:
    """encode_exception writes JSON, with null args and state when they are not encodable."""
    exc = raised(ValueError(object()))
    exc.payload = socket.socket  # type: ignore[attr-defined]  # an unencodable attribute
    record = orjson.loads(encode_exception(exc))
    assert record["type"] == "builtins:ValueError"
    assert record["args"] is None
    assert record["state"] is None


def test_callable_type_alias_hint_is_no_guidance() -> None:
    """Hints with nothing to convert (a Callable) leave the value as it is."""
    assert convert([1], Callable[[int], int]) == [1]


def test_exception_with_non_finite_arguments_is_recorded_without_them() -> None:
    """An exception whose arguments hold NaN is still recorded, its message intact, with the
    arguments left out rather than written as null."""
    record = orjson.loads(encode_exception(raised(ValueError(math.nan, "ratio"))))
    assert record["type"] == "builtins:ValueError"
    assert record["message"] == "(nan, 'ratio')"
    assert record["args"] is None
