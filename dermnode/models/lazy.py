"""Re-exports that load on first use, so that importing a model's package stays cheap.

``dermnode --help`` imports every model's ``commands`` module, and with it the model's package
``__init__``; the names that package re-exports (``FusionClassifier``, ``LesionSegmenter``...) live
in modules that import torch. :func:`lazy_exports` gives the package a module ``__getattr__``
(PEP 562) that imports the defining module only when one of those names is first asked for, so
``from dermnode.models.classifier import FusionClassifier`` works and ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``exports`` maps each name to its submodule."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
