"""Shared pydantic base for spec files and the YAML loader with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kvsim.errors import SpecError


class Strict(BaseModel):
    """Frozen, extra fields rejected: a typo in a spec file is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


M = TypeVar("M", bound=BaseModel)


def format_validation_error(err: ValidationError, origin: str) -> str:
    """One line per problem: ``origin: field.path: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        got_s = ""
        if e["type"] not in ("missing",) and not isinstance(got, dict):
            got_s = f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{origin}: {loc}: {msg}{got_s}")
    return "\n".join(lines)


def validate_dict(cls: type[M], data: object, origin: str) -> M:
    """Validate ``data`` as ``cls``; raise SpecError with one line per bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping at top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, origin)) from None


def read_yaml(path: Path) -> object:
    """Parse a YAML file; a syntax error names the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}{where}: invalid YAML: {problem}") from None


def load_yaml_as(cls: type[M], path: Path) -> M:
    return validate_dict(cls, read_yaml(path), str(path))
