"""Which build of a hot path to use: the compiled module or its Python twin."""

from __future__ import annotations

from types import ModuleType


def choose(compiled_module: ModuleType | None, twin: ModuleType,
           compiled: bool | None, name: str) -> ModuleType:
    """The compiled module when built (or asked for), else the twin.

    ``compiled=None`` takes the fastest one there is; ``True`` insists on
    the compiled one, so a bench or test cannot measure the twin by mistake;
    ``False`` forces the twin.
    """
    if compiled is None:
        return compiled_module if compiled_module is not None else twin
    if compiled and compiled_module is None:
        raise RuntimeError(f"core.fast.{name} is not built; run "
                           "'.venv/bin/python setup.py build_ext --inplace'")
    return compiled_module if compiled else twin
