"""Text the project can build offline, for measuring and training SAEs on the default model.

- docstrings of the Python standard library's modules, classes and functions, read with
  ``ast`` from the installed sources (nothing is imported or run), in a fixed order:
  English technical prose and code vocabulary, identical on every machine with the same
  Python.
- ``stdlib_code``: the standard library's source in chunks (code is half of what a
  coding assistant sees).
- ``chat_transcripts``: the project's own conversations in the model's chat template, so
  chat-formatted activations are covered.

``training_texts`` interleaves the three in a fixed order and splits them: every tenth text
is held out (``split="eval"``) for measuring what was trained on the rest;
``token_sequences`` turns them into the BOS-led token sequences every SAE tool reads.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from monitor.data import demo_conversations

CODE_CHUNK_CHARS = 1500
_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip"}


def _sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [p for p in sorted(root.rglob("*.py")) if not _SKIP & set(p.relative_to(root).parts)]


def _docstrings(min_chars: int) -> Iterator[str]:
    for path in _sources():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree] + [
            n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                yield doc


def stdlib_code() -> Iterator[str]:
    """The standard library's source, file by file, in chunks of whole lines."""
    for path in _sources():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        chunk: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            chunk.append(line)
            size += len(line)
            if size >= CODE_CHUNK_CHARS:
                yield "".join(chunk)
                chunk, size = [], 0
        if size > 200:
            yield "".join(chunk)


def training_texts(tokenizer, split: str, chars: int) -> Iterator[str]:
    """Docstrings, code and chats interleaved (2:1:1 when chats last), ``split`` "train" or
    "eval" (every tenth text), until about ``chars`` characters."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    docs = _docstrings(50)
    code = stdlib_code()
    chats = iter(chat_transcripts(tokenizer, demo_conversations()))
    sources = [docs, docs, code, chats]
    total, index = 0, 0
    while total < chars and sources:
        for source in list(sources):
            text = next(source, None)
            if text is None:
                sources = [s for s in sources if s is not source]
                continue
            held_out = index % 10 == 9
            index += 1
            if held_out == (split == "eval"):
                total += len(text)
                yield text


def chat_transcripts(tokenizer, conversations: list[list[dict[str, str]]]) -> list[str]:
    """Each conversation rendered with the model's chat template (no generation prompt)."""
    return [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]


def token_sequences(tokenizer, split: str, tokens: int, sequence_length: int):
    """BOS-led token sequences of the training or held-out texts, in a fixed order."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    budget = 0
    for text in training_texts(tokenizer, split, chars=tokens * 6):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), sequence_length - 1):
            chunk = ids[start : start + sequence_length - 1]
            if len(chunk) < 16:
                break
            yield bos + chunk
            budget += len(chunk)
        if budget >= tokens * 1.2:
            return
