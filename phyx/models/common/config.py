"""One base for the family config dataclasses: from_dict / to_dict / replace, and validation in
__post_init__ (every construction, dataclasses.replace included), raising phyx.errors types.

A subclass is a @dataclass that overrides validate() (raise LayoutError for a shape that cannot
work, naming the fix) and may declare an `extra: dict` field, which then keeps the unknown keys of
a config.json for round trips (leading-underscore keys such as diffusers' "_class_name" are
dropped). Fields annotated `tuple[...]` come back as tuples from JSON lists.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from phyx.errors import ConfigError, LayoutError, PhyxError

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

    # whole-number fields that may be 0 when read from a file (others must be >= 1)
    ZERO_OK: tuple = ()

    @classmethod
    def check_dict(cls, d: dict, what: str, error) -> None:
        """Hook: family-specific checks of the raw dict before construction."""

    @classmethod
    def from_dict(cls, d: dict, what: str | None = None):
        """Known keys become fields (lists to tuples where the field is a tuple); unknown keys go
        to `extra` when the config has one, else are ignored.

        The dict is data (a config.json, an artifact): every known field is checked against its
        annotation and range first (phyx.io.untrusted.check_fields), construction errors become
        ConfigError, and a config whose approx_params() would not fit in memory is refused before
        anything is built. Every refusal is one ConfigError line naming the field."""
        from phyx.io import untrusted as U

        what = what or f"{cls.__name__} dict"
        if not isinstance(d, dict):
            raise ConfigError(f"{what}: expected a JSON object of fields, got {type(d).__name__}")
        fields = cls._fields()
        U.check_fields(cls, d, what, ConfigError, skip=("extra",),
                       min_int={k: 0 for k in cls.ZERO_OK})
        cls.check_dict(d, what, ConfigError)
        kw = {}
        for k, v in d.items():
            f = fields.get(k)
            if f is None or k == "extra":
                continue
            kw[k] = tuple(v) if isinstance(v, list) and _is_tuple_field(f) else v
        if "extra" in fields:
            kw["extra"] = {k: v for k, v in d.items() if k not in fields and not k.startswith("_")}
        try:
            cfg = cls(**kw)
        except PhyxError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, IndexError) as e:
            raise ConfigError(f"bad {what}: {type(e).__name__}: {e}") from None
        if hasattr(cfg, "approx_params"):
            U.check_param_memory(cfg.approx_params(), what, ConfigError)
        return cfg

    @classmethod
    def from_json(cls, path: str | Path):
        """A config.json: bounded read (regular file, size and depth caps), then from_dict."""
        from phyx.io import untrusted as U

        return cls.from_dict(U.read_json(path, "model config", ConfigError), f"model config {path}")

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
