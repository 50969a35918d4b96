"""The documentation site builds without warnings, and its ``>>>`` examples are true."""

import doctest
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").rglob("*.md"))

#: A fenced Python block whose first line is a doctest prompt.
DOCTEST_BLOCK = re.compile(r"^```python\n(>>> .*?)^```", re.MULTILINE | re.DOTALL)

#: The pages with examples to run.
EXAMPLE_PAGES = [page for page in PAGES if DOCTEST_BLOCK.search(page.read_text(encoding="utf-8"))]

#: Build the site in this interpreter, then report which heavy packages the build loaded.
BUILD = """
import sys
from mkdocs.__main__ import cli
cli.main(["build", "--strict", "--config-file", sys.argv[1], "--site-dir", sys.argv[2]],
         standalone_mode=False)
print(sorted({m.split(".")[0] for m in sys.modules} & {"skunetseg", "tensorflow", "keras"}))
"""


def test_mkdocs_build_is_strict_clean_and_static(tmp_path):
    missing = [name for name in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(name.split(".")[0]) is None
               or importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): "
                    'pip install ".[docs]" or ".[test]"')
    site = tmp_path / "site"
    # some MkDocs plugins log a warning about MkDocs 2 (pinned out in pyproject.toml) that
    # --strict would count; it says nothing about these docs
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-c", BUILD, str(REPO / "mkdocs.yml"), str(site)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    # griffe read the docstrings from the source files: nothing was imported
    assert done.stdout.strip().splitlines()[-1] == "[]"
    reference = (site / "api" / "estimator" / "index.html").read_text(encoding="utf-8")
    assert "validation_fraction" in reference and "early_stopping_patience" in reference
    for method in ("fit", "predict_proba", "predict", "score"):  # inherited ones included
        assert f'id="skunetseg.UNetSegmenter.{method}"' in reference
    # the shared parameters' entries are filled in (docs/griffe_shared_parameters.py), as
    # import skunetseg fills them into __doc__
    presence = (site / "api" / "false_positive" / "index.html").read_text(encoding="utf-8")
    for page in (reference, presence):
        assert "%(" not in page
        assert "Largest share of an epoch given to images that hold no object" in page


def nav_pages(entries):
    """The page paths named in a MkDocs nav (nested lists of {title: page or list})."""
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            yield from nav_pages(value) if isinstance(value, list) else [value]


def test_every_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml", reason='PyYAML comes with mkdocs: pip install ".[docs]"')
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = list(nav_pages(config["nav"]))
    assert len(in_nav) == len(set(in_nav))
    assert sorted(in_nav) == sorted(str(p.relative_to(REPO / "docs")) for p in PAGES)


@pytest.mark.parametrize("page", EXAMPLE_PAGES,
                         ids=[str(p.relative_to(REPO / "docs")) for p in EXAMPLE_PAGES])
def test_page_examples_run_as_shown(page):
    text = page.read_text(encoding="utf-8")
    blocks = [(text[:match.start()].count("\n") + 1, match.group(1))
              for match in DOCTEST_BLOCK.finditer(text)]
    if "skunetseg.plotting" in text and importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (pip install skunetseg[plot])")
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    names, failures = {}, []  # the blocks of a page share their names, as in a session
    for line, block in blocks:
        test = parser.get_doctest(block, names, page.name, str(page), line)
        runner.run(test, out=failures.append, clear_globs=False)
        names = test.globs  # DocTest works on a copy of the names it is given
    assert not failures, "\n".join(failures)
    assert runner.summarize(verbose=False).attempted > 0
