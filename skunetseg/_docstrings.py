"""Docstring entries written once and put into several estimators' docstrings.

A docstring names a shared parameter with a line that holds only ``%(name)s``
where its numpydoc entry goes (as matplotlib's and pandas' docstring
substitutions do); :func:`insert_parameters` replaces the line with the entry,
indented like the line, and the entry's ``%(default)s`` with the estimator's
own default. Lines the docstring writes beneath the marker continue the entry's
description with what holds for that estimator only.

This module imports nothing from skunetseg (only the standard library): the
documentation build (``docs/griffe_shared_parameters.py``) runs it from its
path, without importing the package, and composes the docstrings that the
source files hold the same way.
"""

import re
import textwrap

#: A line standing for a shared entry: ``%(name)s`` alone, after any indentation.
_MARKER = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$", re.MULTILINE)

#: The first line of a numpydoc parameter entry, ``name : type``, at the fragment's margin.
_ENTRY = re.compile(r"^(?P<name>\w+) :", re.MULTILINE)


def parameter_entries(fragment):
    """``{name: entry}`` of a numpydoc parameter list (name lines at one margin).

    Each entry is its ``name : type`` line and its indented description, dedented
    to column 0.
    """
    text = textwrap.dedent(fragment).strip("\n")
    starts = [match.start() for match in _ENTRY.finditer(text)]
    return {_ENTRY.match(text, start)["name"]: text[start:end].rstrip()
            for start, end in zip(starts, [*starts[1:], len(text)], strict=True)}


def marked_parameters(docstring):
    """The names of the shared parameters ``docstring`` marks, in order."""
    return [match["name"] for match in _MARKER.finditer(docstring or "")]


def format_default(value):
    """A default as numpydoc writes it: ``"text"`` for a string, else its repr."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def insert_parameters(docstring, entries, defaults):
    """``docstring`` with each ``%(name)s`` line replaced by ``entries[name]``.

    The entry is indented like the marker, and its ``%(default)s`` becomes
    ``format_default(defaults[name])``. A docstring without markers, or None
    (``python -OO``), comes back unchanged.
    """
    if docstring is None:
        return None

    def entry(match):
        name = match["name"]
        if name not in entries:
            raise ValueError(f"The docstring names the shared parameter {name!r}, which has "
                             f"no entry; the entries are {sorted(entries)}.")
        text = entries[name].replace("%(default)s", format_default(defaults[name]))
        return textwrap.indent(text, match["indent"])

    return _MARKER.sub(entry, docstring)
