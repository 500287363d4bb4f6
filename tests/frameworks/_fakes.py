"""Stand-ins for modules a framework imports at module level but the driven code path never calls.

Used where a framework's file imports GPU or training-only packages (flash-attn, deepspeed, experiment trackers)
that cannot be built, or are not installed, on a CPU machine: each test names what it fakes and why.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any


def stub(name: str, **attrs: Any) -> types.ModuleType:
    """An empty module; with a spec and no version, so transformers' availability checks read it as absent."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    module.__dict__.update(attrs)
    return module


@contextmanager
def modules_replaced(stubs: dict[str, types.ModuleType], imported: Iterable[str] = ()) -> Iterator[None]:
    """``sys.modules`` with ``stubs`` in place; afterwards the previous entries come back and the modules named in
    ``imported`` (those loaded on top of the stubs) are dropped."""
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name in imported:
            sys.modules.pop(name, None)
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
