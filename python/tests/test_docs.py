"""The examples in the package's docstrings and in README.md's Python section run and print
what they say."""

import contextlib
import doctest
import io
import re

import w2v
from conftest import EXPECTED, REPO


def test_docstring_examples(monkeypatch):
    # The examples use paths relative to the repository root.
    monkeypatch.chdir(REPO)
    result = doctest.testmod(w2v, verbose=False, report=True)
    assert result.attempted >= 5
    assert result.failed == 0


def test_readme_python_example(monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README.md's Python section has no python code block"
    monkeypatch.chdir(REPO)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    assert out.getvalue().splitlines()[0] == EXPECTED
