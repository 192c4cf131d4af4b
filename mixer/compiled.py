"""Optional compiled modules: whether one is built, whether it is in use, and saying so once.

Cython modules (the wire decoder, the span encoder) are built by the package's install when a C
compiler is there; without one the install still succeeds and the pure-Python code they speed up
runs alone, with the same results. ``MIXER_PURE_PYTHON=1`` turns every compiled module off, for
comparisons and for running the tests against both paths.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Final

__all__ = ["PURE_PYTHON_ENV", "CompiledModule"]

#: Set to a non-empty value other than ``0`` to run the pure-Python code alone.
PURE_PYTHON_ENV: Final = "MIXER_PURE_PYTHON"


class CompiledModule:
    """One optional compiled module, imported by name.

    By name: a compiled module is no Python source, and the import graph of the layer contracts
    would read ``from package import _module`` as an import of the package.
    """

    def __init__(self, name: str, what: str, logger: logging.Logger) -> None:
        self._logger = logger
        self._what = what
        try:
            built: ModuleType | None = importlib.import_module(name)
            error = ""
        except ImportError as exc:
            built, error = None, str(exc)
        #: The module when it is built, whether or not it is in use.
        self.built = built
        #: The module in use, or None for the pure-Python code alone.
        self.active: ModuleType | None
        if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
            self.active, self.description = None, f"pure Python ({PURE_PYTHON_ENV} is set)"
            level = logging.INFO
        elif built is None:
            self.active, self.description = None, f"pure Python (the compiled {what} is not built: {error})"
            level = logging.WARNING
        else:
            self.active, self.description, level = built, f"compiled ({name})", logging.DEBUG
        self._level = level
        self._unlogged = self.active is None

    def note_pure_python(self) -> None:
        """Log, once per process and at first use, that the compiled module is not in use.

        Not at import: the server configures logging after importing the code that uses it.
        """
        if self._unlogged:
            self._unlogged = False
            self._logger.log(self._level, "running the %s in %s", self._what, self.description)
