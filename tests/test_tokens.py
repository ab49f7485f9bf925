"""Token text for the audit trail: windows, marks, redaction hooks."""

from __future__ import annotations

import pytest

from monitor.config import load_settings
from monitor.errors import ConfigError
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.token_text import MARK_CLOSE, MARK_OPEN, TokenTexts, default_redactor, load_redactor


def test_default_redactor_masks_emails_and_long_numbers():
    text = "mail bob@corp.example.org or call +1 415-555-0100, order 42, card 4111 1111 1111 1111"
    assert default_redactor(text) == "mail <email> or call +<number>, order 42, card <number>"


def test_a_redactor_hook_is_imported_from_module_function():
    assert load_redactor("string:capwords")("a b") == "A B"
    with pytest.raises(ConfigError, match=r"redis.token_redactor 'nope:fn': cannot import it"):
        load_redactor("nope:fn")
    with pytest.raises(ConfigError, match="not a callable"):
        load_redactor("string:digits")


def test_windows_mark_the_firing_token_and_fill_reports(clean_env, settings, default_model):
    texts = TokenTexts(load_settings(overrides={"redis.tokenizer": str(default_model), "home": str(settings.home)}))
    ids = texts.tokenizer.encode("The capital of France is Paris, a city on the Seine.").ids
    paris = next(i for i, t in enumerate(ids) if texts.tokenizer.decode([t]).strip() == "Paris")
    window = texts.window(ids, paris)
    assert f"{MARK_OPEN} Paris{MARK_CLOSE}" in window and window.startswith("The capital")
    assert texts.window(ids, len(ids)) == "" and texts.window(ids, -1) == ""
    report = pb.RequestReport(scores=[pb.ProbeScore(probe="p", top_tokens=[pb.TokenHit(position=paris)])])
    assert texts.annotate(report, ids) == {"p": {str(paris): window}}
    assert report.scores[0].top_tokens[0].text == window


def test_a_missing_tokenizer_is_refused_naming_the_setting(clean_env, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read .*tokenizer\.json.*Set redis\.tokenizer"):
        TokenTexts(load_settings(overrides={"redis.tokenizer": str(tmp_path)}))
