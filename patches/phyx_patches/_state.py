"""Exact, layered undo of what a shim changes: sys.modules entries and attributes.

Each enable() opens a layer that records, for every entry it touches, whether the entry
existed and its old value; closing the layer puts each back (or deletes it) in reverse
order, so the process looks exactly as before, even for attributes that were inherited
(torch.Tensor.cuda lives on the C base class: the shim adds one to torch.Tensor, and the
undo deletes it again instead of leaving a copy behind)."""
from __future__ import annotations

import sys

_MISSING = object()


class Layer:
    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self._undo: list = []
        self.closed = False

    def set_module(self, name: str, module) -> None:
        old = sys.modules.get(name, _MISSING)
        sys.modules[name] = module
        self._undo.append(("module", name, old))

    def set_attr(self, obj, attr: str, value) -> None:
        old = vars(obj).get(attr, _MISSING)
        setattr(obj, attr, value)
        self._undo.append(("attr", (obj, attr), old))

    def close(self) -> None:
        if self.closed:
            return
        for kind, key, old in reversed(self._undo):
            if kind == "module":
                if old is _MISSING:
                    sys.modules.pop(key, None)
                else:
                    sys.modules[key] = old
            else:
                obj, attr = key
                if old is _MISSING:
                    try:
                        delattr(obj, attr)
                    except AttributeError:
                        pass
                else:
                    setattr(obj, attr, old)
        self._undo.clear()
        self.closed = True


STACK: list[Layer] = []
