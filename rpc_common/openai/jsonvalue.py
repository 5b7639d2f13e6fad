"""`google.protobuf.Struct` <-> JSON, keeping integers integers.

A Struct stores every number as a double, so `json_format` hands back `40.0` for a client's `40`;
strict upstream parsers (serde, pydantic strict) then refuse it where an integer is expected. We
therefore read back every integral double within ±2**53 as an `int`. Consequences, all pinned by
tests:

- JSON integers within ±2**53 round-trip exactly; requests with larger integers are refused
  (`invalid_value`) because a double cannot carry them and silently changing a number is worse.
- Non-integral numbers round-trip exactly; an integral decimal such as `1.0` comes back as `1`
  (the same JSON number, only spelled differently).
- A Struct is a protobuf map, so object key order is not kept on the wire. We emit keys sorted
  (deterministic bytes keep upstream prompt caches warm), except that a JSON Schema's
  `properties` are put back in the order of its sibling `required` list: structured output is
  generated in property order, and strict schemas list every property there in declared order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import struct_pb2

from rpc_common.openai.errors import UpstreamFormatError, invalid, invalid_type

MAX_EXACT_INT: Final = 2**53  # the largest magnitude a double holds without rounding
# protobuf refuses to decode messages nested deeper than 100 levels (its default recursion limit,
# also on the gRPC server side), and each JSON object level inside a Struct costs three (Struct,
# map entry, Value). Refusing deeper JSON here turns an undecodable gRPC message into a clear 400;
# 28 levels below the Struct fits under the deepest typed holder (a content part's `other`).
MAX_NESTING: Final = 28
_NULL: Final = struct_pb2.NULL_VALUE


def fill_struct(struct: struct_pb2.Struct, obj: Mapping[str, Any], param: str) -> None:
    """Add `obj`'s members to `struct` (client data: strict); `param` names `obj` in errors."""
    fields = struct.fields
    for key, value in obj.items():
        if not isinstance(key, str):
            raise invalid_type(param, "an object with string keys", obj)
        _fill_value(fields[key], value, f"{param}.{key}" if param else key, 1, strict=True)


def fill_struct_lenient(struct: struct_pb2.Struct, obj: Mapping[str, Any]) -> None:
    """Add `obj`'s members to `struct` (provider data: big ints become doubles, odd values
    text); only JSON nested beyond MAX_NESTING raises (`UpstreamFormatError`)."""
    fields = struct.fields
    for key, value in obj.items():
        _fill_value(fields[str(key)], value, "", 1, strict=False)


def fill_value(target: struct_pb2.Value, value: Any, param: str) -> None:
    """Set `target` (a member of a top-level Struct) to `value` (client data: strict)."""
    _fill_value(target, value, param, 1, strict=True)


def _fill_value(
    target: struct_pb2.Value, value: Any, param: str, depth: int, *, strict: bool
) -> None:
    if value is None:
        target.null_value = _NULL
    elif value is True or value is False:
        target.bool_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, int):
        if strict and not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
            raise invalid(
                f"Invalid '{param}': the integer {value} is too large to be forwarded exactly "
                f"(the limit is ±{MAX_EXACT_INT}).",
                param,
                "invalid_value",
            )
        target.number_value = value
    elif isinstance(value, float):
        if strict and not math.isfinite(value):
            raise invalid(f"Invalid '{param}': expected a finite number.", param, "invalid_value")
        target.number_value = value
    elif isinstance(value, dict | list | tuple):
        if depth > MAX_NESTING:
            _too_deep(param, strict)
        if isinstance(value, dict):
            struct = target.struct_value
            struct.SetInParent()  # an empty object must still select the struct case
            fields = struct.fields
            for key, item in value.items():
                if strict and not isinstance(key, str):
                    raise invalid_type(param, "an object with string keys", value)
                child = f"{param}.{key}" if strict else ""
                _fill_value(fields[str(key)], item, child, depth + 1, strict=strict)
        else:
            values = target.list_value
            values.SetInParent()
            for index, item in enumerate(value):
                child = f"{param}[{index}]" if strict else ""
                _fill_value(values.values.add(), item, child, depth + 1, strict=strict)
    elif strict:
        raise invalid_type(param, "a JSON value", value)
    else:
        target.string_value = str(value)


def _too_deep(param: str, strict: bool) -> None:
    if strict:
        raise invalid(
            f"Invalid '{param}': JSON nested more than {MAX_NESTING} levels deep.",
            param,
            "invalid_value",
        )
    raise UpstreamFormatError(f"JSON nested more than {MAX_NESTING} levels deep")


def struct_to_json(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The JSON object a Struct holds (see the module docstring for numbers and key order)."""
    fields = struct.fields
    result = {key: value_to_json(fields[key]) for key in sorted(fields)}
    properties = result.get("properties")
    required = result.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        result["properties"] = _order_like(properties, required)
    return result


def value_to_json(value: struct_pb2.Value) -> Any:
    """The JSON value a `Value` holds; an unset Value reads as null (proto3 JSON mapping)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return number_to_json(value.number_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_json(value.struct_value)
    if kind == "list_value":
        return [value_to_json(item) for item in value.list_value.values]
    return None


def number_to_json(number: float) -> int | float:
    """An integral double within ±2**53 as an int (see the module docstring), else unchanged."""
    if number.is_integer() and -MAX_EXACT_INT <= number <= MAX_EXACT_INT:
        return int(number)
    return number


def _order_like(properties: dict[str, Any], required: list[Any]) -> dict[str, Any]:
    """`properties` with the names listed in `required` first, in that order."""
    ordered = {
        name: properties[name] for name in required if isinstance(name, str) and name in properties
    }
    for name, schema in properties.items():
        ordered.setdefault(name, schema)
    return ordered


def first_non_finite(struct: struct_pb2.Struct) -> str | None:
    """The path (relative, `.a[0].b`) of the first non-finite number in `struct`, or None."""
    for key, value in struct.fields.items():
        found = _value_non_finite(value)
        if found is not None:
            return f".{key}{found}"
    return None


def _value_non_finite(value: struct_pb2.Value) -> str | None:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return None if math.isfinite(value.number_value) else ""
    if kind == "struct_value":
        return first_non_finite(value.struct_value)
    if kind == "list_value":
        for index, item in enumerate(value.list_value.values):
            found = _value_non_finite(item)
            if found is not None:
                return f"[{index}]{found}"
    return None
