"""Griffe extension: the Keras estimators' docstrings as ``import skunetseg`` composes them.

The shared training parameters are described once, in
``skunetseg._keras_estimator.SHARED_PARAMETERS_DOC``; each estimator's docstring
names them with ``%(name)s`` lines, which ``KerasModelMixin.__init_subclass__``
fills in at import (see ``skunetseg/_docstrings.py``). griffe reads the source
without importing it (``allow_inspection: false`` in mkdocs.yml), so this
extension fills in the same lines from what griffe read: the fragment's string,
each class's ``__init__`` defaults, and the composing functions, run from their
file, which imports nothing from skunetseg.
"""

import ast
import runpy
from pathlib import Path

import griffe

_COMPOSE = runpy.run_path(str(Path(__file__).resolve().parents[1] / "skunetseg"
                              / "_docstrings.py"))


class SharedParameters(griffe.Extension):
    """Fill in the ``%(name)s`` lines of skunetseg's class docstrings."""

    def on_package(self, *, pkg, **kwargs):
        if pkg.name != "skunetseg":
            return
        fragment = ast.literal_eval(pkg["_keras_estimator.SHARED_PARAMETERS_DOC"].value)
        entries = _COMPOSE["parameter_entries"](fragment)
        for module in pkg.modules.values():
            for cls in module.classes.values():
                if cls.is_alias or cls.docstring is None:
                    continue
                marked = _COMPOSE["marked_parameters"](cls.docstring.value)
                if not marked:
                    continue
                defaults = {parameter.name: ast.literal_eval(str(parameter.default))
                            for parameter in cls["__init__"].parameters
                            if parameter.name in marked}
                cls.docstring.value = _COMPOSE["insert_parameters"](
                    cls.docstring.value, entries, defaults)
