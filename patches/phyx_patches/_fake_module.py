"""Build stand-in modules for sys.modules that import like the real package."""
from __future__ import annotations

import importlib.machinery
import types


def make_module(name: str, attrs: dict, doc: str, serves: str, package: bool = True):
    m = types.ModuleType(name, doc)
    # `from x import missing` shows __file__ in its ImportError: let it say what is served
    m.__file__ = f"<phyx_patches shim; serves only: {serves}>"
    m.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=package)
    if package:
        m.__path__ = []          # a package, so `import name.sub` fails cleanly, not oddly
    m.__dict__.update(attrs)
    m.__phyx_shim__ = True

    def __getattr__(attr):       # noqa: N807 - module-level __getattr__ (PEP 562)
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(f"{name}.{attr} is not served by the phyx_patches shim (it serves "
                             f"only: {serves}); replace this call with a phyx.ops equivalent "
                             f"(see `phyx port rules`)")
    m.__getattr__ = __getattr__
    return m
