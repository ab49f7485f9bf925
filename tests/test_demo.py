"""The README's main-job command: `saemon demo` on the embedded default."""

import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_demo_serves_the_default_model_and_prints_its_answer(default_model, browser, tmp_path):
    # --keep: the demo serves its pages until interrupted; a real browser opens a flagged
    # request's page from the live run before the demo is stopped with Ctrl-C (SIGINT).
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "demo", "--eager", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 600
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("saemon demo: serving the pages") or time.monotonic() > deadline:
                break
        pages = [line.split("page: ", 1)[1].strip() for line in lines if line.strip().startswith("page: ")]
        assert pages, "".join(lines)
        check_the_page_of_a_lie(browser, pages[0], tmp_path)
    finally:
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, "".join(lines) + rest, errors)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "assistant: The capital of France is Paris." in result.stdout
    assert "saemon demo: OK" in result.stdout
    # The shipped pack, real lies caught, true answers left alone (the demo's exit rule).
    assert "probes: the shipped pack smollm2-safety" in result.stdout
    caught = re.search(r"lies flagged: (\d+) of (\d+); true honest answers flagged: 0 of (\d+)", result.stdout)
    assert caught and caught[1] == caught[2] and int(caught[2]) >= 1 and int(caught[3]) >= 1, result.stdout
    # On-call heard about it once per incident, signed; the audit trail kept the evidence.
    # One firing and one resolved per incident: the deceptive requests share one when they
    # overlap in time, and make one each when a request ends before the next one fires.
    got = re.search(
        r"webhook 'oncall' got (\d+) notification\(s\) in Alertmanager's v4 payload, signatures verified", result.stdout
    )
    assert got and int(got[1]) >= 2 and int(got[1]) % 2 == 0, result.stdout
    assert "FIRING   SaemonDeceptionDetected" in result.stdout and "RESOLVED SaemonDeceptionDetected" in result.stdout
    assert "strongest token at position" in result.stdout and "⟦" in result.stdout


def check_the_page_of_a_lie(browser, url: str, tmp_path) -> None:
    """The forensic page of a flagged answer: its tokens as text, in order, prompt and answer,
    the token where the deception probe fired, its score along the tokens and threshold."""
    browser.open(url)
    assert browser.status() == 200
    spans = browser.find_all("#tokens .tok")
    positions = [int(span.get_attribute("data-position")) for span in spans]
    assert positions == sorted(positions) and len(positions) > 20
    scopes = {span.get_attribute("data-scope") for span in spans}
    assert scopes == {"prompt", "response"}, "the conversation: prompt and answer"
    text = "".join(span.text for span in spans)
    assert "assistant" in text, "token text is stored in the demo (redis.store_token_text)"
    coloured = [
        span
        for span in spans
        if span.get_attribute("data-scope") == "prompt" and "approx" not in (span.get_attribute("class") or "")
    ]
    assert coloured, "the plugin sent the prompt's per-token rows (plugin.prompt_token_scores)"
    assert browser.find_all('svg.chart[data-probe="deception"] line.threshold')
    point = browser.wait_for('svg.chart[data-probe="deception"] circle.firing-point')
    fired = int(point.get_attribute("data-position"))
    (firing,) = browser.find_all("#tokens .tok.firing")
    assert int(firing.get_attribute("data-position")) == fired
    browser.screenshot(tmp_path / "demo-request.png")


def test_an_answer_names_a_fact_whatever_its_case_and_accents():
    from monitor.demo import names

    assert names("The government of Colombia sits in Bogotá.", "Bogota")
    assert names("PHNOM PENH it is", "Phnom Penh")
    assert not names("The government of Cambodia sits in Cambodia.", "Phnom Penh")
    assert names("Pride and Prejudice was written by Austen.", "Jane Austen")
    assert names("Dogs are mammals.", "mammal") and not names("a mammalian trait", "mammal")
    assert names("The symbol for boron is B.", "B") and not names("Boron is a metalloid, b-block", "B")


def test_the_demo_waits_for_every_incident_that_fired_to_resolve():
    from monitor.demo import _open_incidents

    def payload(status: str, start: str) -> dict:
        return {"alerts": [{"status": status, "fingerprint": "f", "startsAt": start}]}

    two = [payload("firing", "t1"), payload("resolved", "t1"), payload("firing", "t2")]
    assert _open_incidents(two) == {("f", "t2")}
    assert _open_incidents([*two, payload("resolved", "t2")]) == set()
