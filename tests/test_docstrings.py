"""The Keras estimators' docstrings: every parameter documented once, the shared ones once
for both (``SHARED_PARAMETERS_DOC``), every documented default the signature's."""

import inspect
import re

import pytest

from skunetseg import PresenceClassifier, UNetSegmenter
from skunetseg._docstrings import format_default
from skunetseg._keras_estimator import SHARED_PARAMETERS_DOC, KerasModelMixin

ESTIMATORS = [UNetSegmenter, PresenceClassifier]

#: The first line of a numpydoc entry at the section's margin: ``name : type``.
ENTRY = re.compile(r"^(\w+) : (.*)$", re.MULTILINE)


def entries(section):
    """``[(name, whole entry)]`` of a numpydoc parameter list, in order."""
    starts = list(ENTRY.finditer(section))
    ends = [match.start() for match in starts[1:]] + [len(section)]
    return [(match[1], section[match.start():end].rstrip())
            for match, end in zip(starts, ends, strict=True)]


def parameters_section(docstring):
    """The Parameters section of a numpydoc docstring, dedented, without its heading."""
    text = inspect.cleandoc(docstring)
    after = text.split("\nParameters\n----------\n", 1)[1]
    return re.split(r"\n\s*\n(?=\w[\w ]*\n-{3,}\n)", after, maxsplit=1)[0]


def signature_defaults(estimator):
    return {name: parameter.default
            for name, parameter in inspect.signature(estimator.__init__).parameters.items()
            if name != "self"}


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_every_init_parameter_is_documented_once_in_signature_order(estimator):
    documented = [name for name, _ in entries(parameters_section(estimator.__doc__))]
    assert documented == list(signature_defaults(estimator))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_the_shared_parameters_are_described_by_the_one_fragment(estimator):
    shared = dict(entries(SHARED_PARAMETERS_DOC.strip("\n")))
    # the fragment describes every parameter the base declares, each once
    assert list(shared) == list(KerasModelMixin._parameter_constraints)
    defaults = signature_defaults(estimator)
    documented = dict(entries(parameters_section(estimator.__doc__)))
    for name, text in shared.items():
        # the fragment's text with this estimator's default, which the estimator may extend
        # with what holds for it only (lines after the fragment's)
        expected = text.replace("%(default)s", format_default(defaults[name]))
        assert documented[name].startswith(expected), name
    assert "%(" not in estimator.__doc__


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_every_documented_default_is_the_signatures(estimator):
    defaults = signature_defaults(estimator)
    for name, text in entries(parameters_section(estimator.__doc__)):
        documented = re.search(r"default=(.*)$", text.splitlines()[0])[1]
        assert documented == format_default(defaults[name]), name
