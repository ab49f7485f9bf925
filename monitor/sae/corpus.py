"""Text the project can build offline, for measuring and training SAEs on the default model.

- ``stdlib_docstrings``: docstrings of the Python standard library's modules, classes and
  functions, read with ``ast`` from the installed sources (nothing is imported or run),
  in a fixed order: English technical prose and code vocabulary, identical on every
  machine with the same Python.
- ``chat_transcripts``: the project's own prompts in the model's chat template (system,
  user and, when given, assistant turns), so chat-formatted activations are covered.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

MIN_DOC_CHARS = 200


def stdlib_docstrings(limit_chars: int) -> list[str]:
    """Docstrings of at least MIN_DOC_CHARS characters, up to ``limit_chars`` in total."""
    texts, total = [], 0
    for doc in _docstrings(Path(sysconfig.get_paths()["stdlib"])):
        texts.append(doc)
        total += len(doc)
        if total >= limit_chars:
            break
    return texts


def _docstrings(root: Path) -> Iterator[str]:
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip"}
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_DOC_CHARS:
                yield doc


def chat_transcripts(tokenizer, conversations: list[list[dict[str, str]]]) -> list[str]:
    """Each conversation rendered with the model's chat template (no generation prompt)."""
    return [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
