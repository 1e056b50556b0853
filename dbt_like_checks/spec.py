"""Declarative test specs: YAML files per table, validated strictly so a bad spec fails at load."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TABLES = ("embeddings", "quarantine")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(ValueError):
    """A spec file that cannot be turned into checks; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotNull(_Strict):
    columns: Annotated[list[str], Field(min_length=1)]


class Unique(_Strict):
    columns: Annotated[list[str], Field(min_length=1)]


class AcceptedValues(_Strict):
    column: str
    values: Annotated[list[str | int | float | bool], Field(min_length=1)]


class AcceptedRange(_Strict):
    column: str
    min: float | datetime | None = None
    max: float | datetime | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> AcceptedRange:
        if self.min is None and self.max is None:
            raise ValueError("give at least one of min, max")
        return self


class Relationships(_Strict):
    column: str
    to: Literal["embeddings", "quarantine"]
    field: str


class Duration(_Strict):
    minutes: float = 0
    hours: float = 0
    days: float = 0

    def delta(self) -> timedelta:
        return timedelta(minutes=self.minutes, hours=self.hours, days=self.days)


class Freshness(_Strict):
    column: str
    warn_after: Duration | None = None
    error_after: Duration | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> Freshness:
        if self.warn_after is None and self.error_after is None:
            raise ValueError("give warn_after, error_after or both")
        return self


class RowCount(_Strict):
    min: int | None = None
    max: int | None = None


class VectorDims(_Strict):
    column: str = "vector"
    per: str = "model"
    expected: int | Literal["table"] | None = None


class SqlTest(_Strict):
    file: str


TEST_TYPES: dict[str, type[_Strict]] = {
    "not_null": NotNull,
    "unique": Unique,
    "accepted_values": AcceptedValues,
    "accepted_range": AcceptedRange,
    "relationships": Relationships,
    "freshness": Freshness,
    "row_count": RowCount,
    "vector_dims": VectorDims,
    "sql": SqlTest,
}


class TestSpec(_Strict):
    """One test: a name, exactly one test type with its arguments, and how a failure counts."""

    name: str
    kind: str
    args: Any
    severity: Literal["error", "warn"] = "error"
    blocking: bool = False
    description: str | None = None
    sql_text: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must be letters, digits and underscores")
        return value


class TableSpec(_Strict):
    path: Path
    table: Literal["embeddings", "quarantine"]
    asset: str
    tests: list[TestSpec]


_COMMON = {"name", "severity", "blocking", "description"}


def _fail(path: Path, where: str, message: str) -> SpecError:
    return SpecError(f"{path}: {where}: {message}")


def _parse_test(path: Path, index: int, raw: Any) -> TestSpec:
    where = f"tests[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, f"each test must be a mapping, got {type(raw).__name__}")
    kinds = [k for k in raw if k not in _COMMON]
    unknown = [k for k in kinds if k not in TEST_TYPES]
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", f"unknown key; test types are {', '.join(TEST_TYPES)}")
    if len(kinds) != 1:
        raise _fail(path, where, f"needs exactly one test type, found {kinds or 'none'}")
    kind = kinds[0]
    if "name" not in raw:
        raise _fail(path, f"{where}.name", "missing")
    try:
        args = TEST_TYPES[kind].model_validate(raw[kind] or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise _fail(path, f"{where}.{kind}" + (f".{key}" if key else ""), first["msg"]) from None
    sql_text = None
    if isinstance(args, SqlTest):
        sql_path = path.parent / "sql" / args.file
        if not sql_path.is_file():
            raise _fail(path, f"{where}.sql.file", f"no such file {sql_path}")
        sql_text = sql_path.read_text()
    try:
        return TestSpec(
            name=raw["name"],
            kind=kind,
            args=args,
            severity=raw.get("severity", "error"),
            blocking=raw.get("blocking", False),
            description=raw.get("description"),
            sql_text=sql_text,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail(path, f"{where}.{first['loc'][0]}", first["msg"]) from None


def load_spec(path: Path) -> TableSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the top level must be a mapping with table, asset and tests")
    for key in raw:
        if key not in ("table", "asset", "tests", "version"):
            raise _fail(path, key, "unknown key; expected version, table, asset, tests")
    for key in ("table", "asset", "tests"):
        if key not in raw:
            raise _fail(path, key, "missing")
    if raw["table"] not in TABLES:
        raise _fail(path, "table", f"{raw['table']!r} is not one of {', '.join(TABLES)}")
    if not isinstance(raw["tests"], list):
        raise _fail(path, "tests", "must be a list")
    tests = [_parse_test(path, i, t) for i, t in enumerate(raw["tests"])]
    seen: set[str] = set()
    for i, test in enumerate(tests):
        if test.name in seen:
            raise _fail(path, f"tests[{i}].name", f"{test.name!r} is used twice")
        seen.add(test.name)
    return TableSpec(path=path, table=raw["table"], asset=str(raw["asset"]), tests=tests)


def load_specs(directory: Path) -> list[TableSpec]:
    """Every `*.yml`/`*.yaml` spec in `directory`, in name order."""
    files = sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")])
    specs = [load_spec(f) for f in files]
    names: dict[tuple[str, str], Path] = {}
    for spec in specs:
        for test in spec.tests:
            key = (spec.asset, test.name)
            if key in names:
                raise _fail(spec.path, test.name, f"check name already used for {spec.asset} in {names[key]}")
            names[key] = spec.path
    return specs
