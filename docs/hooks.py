"""MkDocs hook: show the Sphinx roles of the NumPy docstrings as plain code.

The docstrings follow numpydoc and cross-reference with Sphinx roles
(``:class:`~skunetseg.augment.Augmenter```), which mkdocstrings renders as
``:class:<code>~skunetseg.augment.Augmenter</code>``. This hook drops the role, and
as Sphinx does, shows only the last name after ``~`` and only the title of
``title <target>``.
"""

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):<code>(~?)([^<]*?)"
                   r"(?: &lt;[^<]*?&gt;)?</code>")


def _plain(match):
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html, **kwargs):
    return _ROLE.sub(_plain, html)
