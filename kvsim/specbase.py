"""Shared pydantic base for spec files and the YAML loader with one-line errors."""

from __future__ import annotations

import difflib

import math
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from kvsim.errors import SpecError

# ----- numbers where they enter: one set of annotated types for every spec and parameter -----
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def _fmt(x: float) -> str:
    """A bound as people write it: int 2147483647 exactly; float 2**50 -> '1.126e+15', 1.0 -> '1'."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e7 else f"{x:.4g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, unit: str) -> str:
    u = f" {unit}" if unit else ""
    if lo is None:
        return f"<= {_fmt(hi)}{u}"  # type: ignore[arg-type]
    if hi is None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}{u}"
    return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]{u}"


def _in_range(v: Any, lo: float | None, hi: float | None, lo_open: bool) -> bool:
    if lo is not None and not (v > lo if lo_open else v >= lo):
        return False
    return hi is None or v <= hi


def _NumberError(msg: str) -> PydanticCustomError:
    """A validation error whose message is ``msg`` as is (no "Value error, " prefix)."""
    return PydanticCustomError("number_range", msg)


def number(
    kind: type = float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, unit: str = ""
) -> Any:
    """Annotated ``int``/``float`` that rejects booleans, non-finite values and values outside
    ``lo..hi`` (``lo_open``: ``lo`` excluded) with one message stating the allowed range.

    Integers are also bounded to int64. Strings that parse as numbers are accepted (method
    parameters arrive as ``"4"`` from the command line; YAML 1.1 reads ``80e9`` as a string).
    """
    if kind is int:
        lo = -INT64_MAX - 1 if lo is None else int(max(lo, -INT64_MAX - 1))
        hi = INT64_MAX if hi is None else int(min(hi, INT64_MAX))
    else:
        lo, hi = (None if lo is None else float(lo)), (None if hi is None else float(hi))
    allowed = "" if lo is None and hi is None else _range_text(lo, hi, lo_open, unit)
    what = "a whole number" if kind is int else "a finite number"

    def before(v: Any) -> Any:
        if isinstance(v, bool):
            raise _NumberError(f"must be {what}{' ' + allowed if allowed else ''}, not a boolean")
        if isinstance(v, float) and not math.isfinite(v):
            raise _NumberError(f"must be {what}{' ' + allowed if allowed else ''}")
        if isinstance(v, (int, float)) and not _in_range(v, lo, hi, lo_open):
            raise _NumberError(f"must be {allowed}")
        return v

    def after(v: Any) -> Any:
        if not _in_range(v, lo, hi, lo_open):
            raise _NumberError(f"must be {allowed}")
        return v

    extra = {} if kind is int else {"allow_inf_nan": False}
    return Annotated[kind, BeforeValidator(before), AfterValidator(after), Field(**extra)]


#: any int64 integer / any finite float (no bool); add ranges with Field(gt=..) or :func:`number`
Int = number(int)
Float = number(float)
#: common shapes
PosInt = number(int, 1)
NonNegInt = number(int, 0)
PosFloat = number(float, 0, lo_open=True)
NonNegFloat = number(float, 0)
Fraction = number(float, 0, 1)  # [0, 1]
PosFraction = number(float, 0, 1, lo_open=True)  # (0, 1]
#: a YAML/JSON boolean only (``true``/``false``): 1, "yes" and "on" are rejected
Bool = Annotated[bool, Field(strict=True)]


def _setting(v: Any) -> Any:
    """A boolean as is; anything else must be a finite number (one message, not one per union member)."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise _NumberError("must be a finite number or a boolean") from None
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _NumberError("must be a finite number or a boolean")
    return float(v)


#: an efficiency setting: a switch (``tiles_in_body: true``) or a finite number; None = not set
Setting = Annotated[bool | float | None, BeforeValidator(_setting)]


class Strict(BaseModel):
    """Frozen, extra fields rejected: a typo in a spec file is an error, not a default.

    Floats must be finite (``allow_inf_nan=False``); numeric fields use the annotated
    types above so that booleans and out-of-range counts are rejected too."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)


M = TypeVar("M", bound=BaseModel)


def short_repr(value: object, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters (a 400-digit number stays on one short line)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit str limit
        return "an integer of more than 4300 digits"
    if len(text) <= limit:
        return text
    unit = "digits" if isinstance(value, int) else "characters"
    return f"{text[:limit]}... ({len(text)} {unit})"


def format_validation_error(err: ValidationError, origin: str, keys: dict[str, str] | None = None,
                            known: list[str] | None = None, top_level: str = "(top level)") -> str:
    """One line: ``origin: field.path: message (got value)`` of the first problems (at most
    :data:`SHOWN_PROBLEMS`, joined by ``; ``), then the other problems' fields by name; ``keys`` renames
    field paths (e.g. to the Hugging Face key a field came from); ``known`` (the accepted field
    names) turns pydantic's "Extra inputs are not permitted" into "unknown field (known: ...)";
    ``top_level`` names a whole-object problem's place ("": no place, the message follows the origin)."""
    lines: list[str] = []
    places: list[str] = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        loc = (keys or {}).get(loc, loc) or top_level
        got = e.get("input")
        got_s = ""
        if e["type"] not in ("missing",) and not isinstance(got, (dict, list)):
            got_s = f" (got {short_repr(got)})"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and known:
            close = difflib.get_close_matches(str(e["loc"][-1]) if e["loc"] else "", known, n=1, cutoff=0.6)
            msg = (f"Extra inputs are not permitted: unknown field"
                   + (f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"))
        lines.append(f"{loc}: {msg}{got_s}" if loc else f"{msg}{got_s}")
        places.append(loc)
    text = "; ".join(lines[:SHOWN_PROBLEMS])
    if len(lines) > SHOWN_PROBLEMS:  # the rest by name only (a template's nulls: every field to fill is named)
        rest = places[SHOWN_PROBLEMS:]
        text += f"; {len(rest)} more: {', '.join(rest)}"
    return f"{origin}: {text}"


#: problems a spec error spells out before naming the rest's fields only (the error stays one line)
SHOWN_PROBLEMS = 3


#: where a spec file of each kind goes on the command line
_KIND_FLAG = {"gpu": "--hw", "system": "--hw", "model": "--model", "host": "the host: field of a system file",
              "link": "a link field of a GPU or system file"}


def first_problem(err: ValidationError, whole: str = "(input)") -> str:
    """``field.path: message`` of a pydantic error's first problem, for one-line messages (``whole``
    names a problem of the input as a whole, which has no path)."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or whole
    return f"{loc}: {e['msg'].removeprefix('Value error, ')}"


def validate_dict(cls: type[M], data: object, origin: str) -> M:
    """Validate ``data`` as ``cls``; raise SpecError with one line per bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping at top level, got {type(data).__name__}")
    field = cls.model_fields.get("kind")
    expected = getattr(field, "default", None)
    if isinstance(expected, str) and isinstance(data.get("kind"), str) and data["kind"] != expected:
        # a file of another kind: one line saying so, not one per field it lacks
        where = _KIND_FLAG.get(data["kind"])
        raise SpecError(f"{origin}: a {data['kind']} spec (kind: {data['kind']}), not a {expected} spec"
                        + (f"; pass it with {where}" if where else ""))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, origin, known=list(cls.model_fields))) from None


def read_text(path: Path) -> str:
    """A spec file's text as UTF-8; unreadable or non-UTF-8 bytes raise a one-line SpecError."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # (a byte-order mark, as Windows editors write, is dropped)
    except OSError as err:
        raise SpecError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None


#: PyYAML's libyaml (C) safe loader when PyYAML was built with it: the same documents, ~10x
#: faster (the 99 hardware and model files: benchmarks/RESULTS.md, "CLI speed"). Its error messages say
#: less (not which character cannot start a token), so a file it rejects is parsed again by the
#: pure-Python loader, whose message (or result) is the one returned.


def _mapping_without_duplicates(loader, node, deep=False):
    """A YAML mapping whose keys are distinct: a key written twice (PyYAML keeps the last silently) is
    an error at its second line, since a user edits one copy and kvsim reads the other."""
    first: dict = {}
    for key_node, _ in node.value:  # (before merges: a '<<' merge's keys may be overridden)
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            line = first.setdefault(key, key_node.start_mark.line)
        except TypeError:  # an unhashable key: the constructor's own error follows
            continue
        if line != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {line + 1}): keep one", key_node.start_mark)
    loader.flatten_mapping(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


#: YAML 1.1 integers a reader would take for decimal: a leading zero is octal (``040`` -> 32), ``1:30``
#: sexagesimal (-> 90); YAML 1.2 and every other config format read them as 40 and text
_SURPRISING_INT = re.compile(r"[-+]?(0[0-9_]+|[0-9][0-9_]*(:[0-5]?[0-9])+)")


def _int_as_written(loader, node):
    """An integer as YAML 1.1 reads it, unless a reader would read it otherwise (:data:`_SURPRISING_INT`):
    then an error at its line, since PyYAML silently turns ``num_layers: 040`` into 32 layers."""
    text = loader.construct_scalar(node)
    if _SURPRISING_INT.fullmatch(text.replace(" ", "")):
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is read as {yaml.SafeLoader.construct_yaml_int(loader, node)} by YAML 1.1 (a leading "
            "zero is octal, ':' sexagesimal): write the number without a leading zero, or quote it", node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _float_as_written(loader, node):
    """A float as YAML 1.1 reads it, unless it is sexagesimal (``1:30.5`` -> 90.5): then an error."""
    text = loader.construct_scalar(node)
    if ":" in text:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is read as {yaml.SafeLoader.construct_yaml_float(loader, node)} by YAML 1.1 "
            "(':' is sexagesimal): write the number, or quote it", node.start_mark)
    return yaml.SafeLoader.construct_yaml_float(loader, node)


class _StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate mapping keys and integers YAML 1.1 reads unlike a reader."""


_StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_StrictSafeLoader.add_constructor("tag:yaml.org,2002:int", _int_as_written)
_StrictSafeLoader.add_constructor("tag:yaml.org,2002:float", _float_as_written)

if getattr(yaml, "CSafeLoader", None) is not None:
    class _StrictCSafeLoader(yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        """libyaml's safe loader, refusing duplicate mapping keys."""

    _StrictCSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
    _StrictCSafeLoader.add_constructor("tag:yaml.org,2002:int", _int_as_written)
    _StrictCSafeLoader.add_constructor("tag:yaml.org,2002:float", _float_as_written)
    _FAST_LOADER = _StrictCSafeLoader
else:
    _FAST_LOADER = None


def read_yaml(path: Path) -> object:
    """Parse a YAML file; a syntax error names the file and line."""
    text = read_text(path)
    if _FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)  # (a safe loader)
        except (yaml.YAMLError, ValueError, RecursionError):
            pass  # the message below
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)  # (a safe loader)
    except RecursionError:
        raise SpecError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as err:  # e.g. an integer past Python's 4300-digit limit
        raise SpecError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}{where}: invalid YAML: {problem}") from None


def load_yaml_as(cls: type[M], path: Path) -> M:
    return validate_dict(cls, read_yaml(path), str(path))


def name_or_spec(value, spec_type: type, expected: str):
    """A ``--hw``/``--model`` argument from Python: ``value`` itself when it is already a
    ``spec_type``, a path or name as ``str``; anything else is a one-line SpecError (``expected``:
    what the argument takes, e.g. ``"hardware must be a name, a YAML path or a System"``)."""
    if isinstance(value, spec_type):
        return value
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str):
        raise SpecError(f"{expected} (got {type(value).__name__})")
    return value
