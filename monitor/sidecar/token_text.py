"""Token text for the audit trail: the words around the tokens that fired, redacted.

Off unless ``redis.store_token_text`` is set: then the plugin sends each finished request's
token ids with its end marker (``plugin.send_token_ids``), and for every probe's strongest
tokens the sidecar keeps a short window of text with the firing token marked ``⟦…⟧``,
passed through a redaction hook, under its own (shorter) TTL in Redis.

The tokenizer is the served model's ``tokenizer.json`` read with the `tokenizers` library
(the one transformers uses, without importing transformers into the sidecar).
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from monitor.config import Settings
from monitor.errors import ConfigError
from monitor.proto.saemon.v1 import monitor_pb2 as pb

#: Words of context kept before and after a firing token.
CONTEXT_BEFORE = 10
CONTEXT_AFTER = 3
#: Tokens decoded on each side before redaction: redacting the wider text first means an
#: e-mail or number cut by the window's edge is still recognised and masked whole.
_DECODE_SPAN = 48
MARK_OPEN, MARK_CLOSE = "⟦", "⟧"

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGITS = re.compile(r"\d(?:[\s-]?\d){5,}")


def default_redactor(text: str) -> str:
    """Masks e-mail addresses and runs of 6+ digits (phone, card and account numbers)."""
    return _DIGITS.sub("<number>", _EMAIL.sub("<email>", text))


def load_redactor(spec: str | None) -> Callable[[str], str]:
    """``'package.module:function'`` -> the function; None -> the default redactor."""
    if spec is None:
        return default_redactor
    module_name, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name) if name else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"redis.token_redactor {spec!r}: cannot import it ({exc}). Give 'module:function'.") from None
    if not callable(function):
        raise ConfigError(
            f"redis.token_redactor {spec!r}: not a callable; give 'module:function' taking and returning str."
        )
    return function


def tokenizer_dir(settings: Settings) -> Path:
    if settings.redis.tokenizer is not None:
        return settings.redis.tokenizer
    if settings.model.path is not None:
        return settings.model.path
    return settings.models_dir / settings.model.name


class TokenTexts:
    """Turns a finished request's token ids and top tokens into redacted text windows."""

    def __init__(self, settings: Settings) -> None:
        from tokenizers import Tokenizer

        path = tokenizer_dir(settings) / "tokenizer.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for missing/invalid files
            raise ConfigError(
                f"redis.store_token_text needs the served model's tokenizer: cannot read {path} ({exc}). "
                "Set redis.tokenizer to the directory holding tokenizer.json."
            ) from None
        self.redact = load_redactor(settings.redis.token_redactor)

    def window(self, token_ids: Sequence[int], position: int) -> str:
        """A few words around ``position`` with that token marked, redacted; '' if out of range."""
        if not 0 <= position < len(token_ids):
            return ""
        lo, hi = max(0, position - _DECODE_SPAN), min(len(token_ids), position + 1 + _DECODE_SPAN)
        decode = self.tokenizer.decode
        before = decode(list(token_ids[lo:position]), skip_special_tokens=False)
        token = decode([token_ids[position]], skip_special_tokens=False)
        after = decode(list(token_ids[position + 1 : hi]), skip_special_tokens=False)
        redacted = self.redact(f"{before}{MARK_OPEN}{token}{MARK_CLOSE}{after}")
        head, sep, rest = redacted.partition(MARK_OPEN)
        if not sep:  # the redactor removed the mark: keep what it returned, bounded
            return redacted[:200]
        words = re.split(r"(\s+)", head)
        head = "".join(words[-(2 * CONTEXT_BEFORE) :]) if len(words) > 2 * CONTEXT_BEFORE else head
        marked, sep, tail = rest.partition(MARK_CLOSE)
        words = re.split(r"(\s+)", tail)
        tail = "".join(words[: 2 * CONTEXT_AFTER]) if len(words) > 2 * CONTEXT_AFTER else tail
        return f"{head}{MARK_OPEN}{marked}{sep}{tail}"

    def pieces(self, token_ids: Sequence[int]) -> list[str]:
        """The request's tokens as text, one piece per token, redacted as one text: a token
        the redactor changed (with the others of the same masked span) becomes the masked
        text on the span's first token and '' on the rest, so positions still line up."""
        decode = self.tokenizer.decode
        pieces = [decode([token], skip_special_tokens=False) for token in token_ids]
        text = "".join(pieces)
        redacted = self.redact(text)
        if redacted == text:
            return pieces
        return realign(pieces, redacted)

    def annotate(self, report: pb.RequestReport, token_ids: Sequence[int]) -> dict[str, dict[str, str]]:
        """Fill ``text`` of every top token in ``report``; returns {probe: {position: text}}."""
        texts: dict[str, dict[str, str]] = {}
        for score in report.scores:
            for hit in score.top_tokens:
                hit.text = self.window(token_ids, hit.position)
                if hit.text:
                    texts.setdefault(score.probe, {})[str(hit.position)] = hit.text
        return texts


def realign(pieces: Sequence[str], redacted: str) -> list[str]:
    """Cut ``redacted`` (a redaction of ``"".join(pieces)``) back into one piece per token."""
    text = "".join(pieces)
    bounds = [0]
    for piece in pieces:
        bounds.append(bounds[-1] + len(piece))
    # Where each original offset lands in the redacted text; None strictly inside a change.
    where: dict[int, int] = {}
    inside: set[int] = set()
    for tag, i1, i2, j1, j2 in _changes(text, redacted):
        if tag == "equal":
            for x in range(i1, i2 + 1):
                where.setdefault(x, j1 + x - i1)
        else:
            inside.update(range(i1 + 1, i2))
            where.setdefault(i1, j1)
            where[i2] = j2
    cuts = [k for k, x in enumerate(bounds) if x not in inside and x in where]
    result = [""] * len(pieces)
    for a, b in itertools.pairwise(cuts):
        result[a] = redacted[where[bounds[a]] : where[bounds[b]]]
    return result


def _changes(text: str, redacted: str) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes with changes joined across short equal runs (a mask such as
    ``<email>`` shares stray letters with what it replaced)."""
    merged: list[tuple[str, int, int, int, int]] = []
    for op in difflib.SequenceMatcher(None, text, redacted, autojunk=False).get_opcodes():
        merged.append(op)
        while len(merged) >= 3 and merged[-1][0] != "equal" and merged[-3][0] != "equal":
            middle = merged[-2]
            if middle[0] != "equal" or middle[2] - middle[1] >= 4:
                break
            last = merged.pop()
            merged.pop()
            first = merged.pop()
            merged.append(("replace", first[1], last[2], first[3], last[4]))
    return merged


def apply_texts(report: pb.RequestReport, texts: dict[str, dict[str, str]]) -> None:
    """Put stored texts back into a report read from the store."""
    for score in report.scores:
        by_position = texts.get(score.probe, {})
        for hit in score.top_tokens:
            hit.text = by_position.get(str(hit.position), "")
