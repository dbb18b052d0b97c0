"""One base for the family config dataclasses: from_dict / to_dict / replace, and validation in
__post_init__ (every construction, dataclasses.replace included), raising phyx.errors types.

A subclass is a @dataclass that overrides validate() (raise LayoutError for a shape that cannot
work, naming the fix) and may declare an `extra: dict` field, which then keeps the unknown keys of
a config.json for round trips (leading-underscore keys such as diffusers' "_class_name" are
dropped). Fields annotated `tuple[...]` come back as tuples from JSON lists.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from phyx.errors import CheckpointError, LayoutError

__all__ = ["FamilyConfig", "LayoutError"]


def _is_tuple_field(f: dataclasses.Field) -> bool:
    return str(f.type).replace(" ", "").startswith(("tuple", "Tuple"))


class FamilyConfig:
    """Mixin for @dataclass configs (frozen or not)."""

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise LayoutError (naming the fix) when the config cannot work; return self."""
        return self

    # ------------------------------------------------------------------ dict round trips
    @classmethod
    def _fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict):
        """Known keys become fields (lists to tuples where the field is a tuple); unknown keys go
        to `extra` when the config has one, else are ignored."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
        fields = cls._fields()
        kw = {}
        for k, v in d.items():
            f = fields.get(k)
            if f is None or k == "extra":
                continue
            kw[k] = tuple(v) if isinstance(v, list) and _is_tuple_field(f) else v
        if "extra" in fields:
            kw["extra"] = {k: v for k, v in d.items() if k not in fields and not k.startswith("_")}
        try:
            return cls(**kw)
        except TypeError as e:
            raise CheckpointError(f"bad {cls.__name__} dict: {e}") from e

    @classmethod
    def from_json(cls, path: str | Path):
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        """Every field but `extra`, tuples as lists (JSON-ready)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)
