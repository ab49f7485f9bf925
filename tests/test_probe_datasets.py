"""The contrastive dataset generators: deterministic, disjoint splits, valid content."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from monitor.errors import ProbeDataError
from monitor.lab import datasets
from monitor.lab.datasets import SPLITS, Example, read_jsonl

CONCEPTS = ("deception", "insecure_code", "control")


@pytest.fixture(scope="module")
def generated() -> dict[str, list[Example]]:
    return {concept: datasets.generate(concept) for concept in CONCEPTS}


def test_generators_are_deterministic_across_interpreters(generated):
    """Same bytes in a fresh interpreter with another hash seed (no set or dict-order luck)."""
    here = {concept: datasets.digest(examples) for concept, examples in generated.items()}
    again = {concept: datasets.digest(datasets.generate(concept)) for concept in CONCEPTS}
    code = (
        "import json; from monitor.lab import datasets as d; "
        f"print(json.dumps({{c: d.digest(d.generate(c)) for c in {CONCEPTS!r}}}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = json.loads(
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    )
    assert here == again == other


def test_a_few_thousand_examples_per_concept_in_every_split_with_both_labels(generated):
    for concept in ("deception", "insecure_code"):
        examples = generated[concept]
        assert len(examples) >= 2000, concept
        for split in SPLITS:
            labels = Counter(e.label for e in examples if e.split == split and e.concept == concept)
            assert labels[0] == labels[1] > 50, (concept, split, labels)
    controls = generated["control"]
    assert len(controls) >= 1000
    assert {e.label for e in controls} == {0} and {e.split for e in controls} == set(SPLITS)
    # the deception concept mixes the three kinds of data the notes ask for
    assert {e.meta["dataset"] for e in generated["deception"]} == {"facts", "instructed", "roleplay"}


@pytest.mark.parametrize("concept", CONCEPTS)
def test_splits_are_disjoint_by_template_and_by_entity(generated, concept):
    by_split: dict[str, dict[str, set[str]]] = {s: defaultdict(set) for s in SPLITS}
    for e in generated[concept]:
        by_split[e.split]["template"].add(e.meta["template"])
        by_split[e.split]["entity"].add(e.meta["entity"])
    for axis in ("template", "entity"):
        for a, b in (("train", "calib"), ("train", "test"), ("calib", "test")):
            shared = by_split[a][axis] & by_split[b][axis]
            assert not shared, f"{concept}: {axis}s in both {a} and {b}: {sorted(shared)[:5]}"

    # and the texts themselves: no test conversation appears in train
    def key(e):
        return tuple((m.role, m.content) for m in e.messages)

    train = {key(e) for e in generated[concept] if e.split == "train"}
    assert not any(key(e) in train for e in generated[concept] if e.split == "test")


@pytest.mark.parametrize("concept", ("deception", "insecure_code"))
def test_pairs_differ_only_in_label_and_answer(generated, concept):
    pairs = defaultdict(list)
    for e in generated[concept]:
        pairs[e.meta["pair"]].append(e)
    for pair, members in pairs.items():
        assert sorted(m.label for m in members) == [0, 1], pair
        honest, other = sorted(members, key=lambda m: m.label)
        assert honest.messages[-1].content != other.messages[-1].content
        assert honest.split == other.split
        if honest.meta["dataset"] != "instructed":  # instructed pairs differ in the system prompt
            assert honest.messages[:-1] == other.messages[:-1], pair


def test_code_answers_are_python_and_requests_do_not_give_the_label_away(generated):
    for e in generated["insecure_code"]:
        answer = e.messages[-1].content
        assert answer.startswith("```python\n") and answer.endswith("\n```")
        ast.parse(answer[len("```python\n") : -len("\n```")])
        request = e.messages[0].content.lower()
        assert not any(word in request for word in ("secure", "safe", "vulnerab", "inject")), request
    families = {e.meta["dataset"] for e in generated["insecure_code"] if e.split == "test"}
    assert len(families) >= 10  # held-out templates of many CWE families


def test_false_statements_put_another_rows_answer_in_the_same_phrasing(generated):
    facts = [e for e in generated["deception"] if e.meta["dataset"] == "facts"]
    pairs = defaultdict(dict)
    for e in facts:
        pairs[e.meta["pair"]][e.label] = e.messages[-1].content
    capital = next(p for k, p in pairs.items() if k.startswith("facts:capital-what:France"))
    assert capital[0] == "The capital of France is Paris."
    assert capital[1].startswith("The capital of France is ") and "Paris" not in capital[1]


def test_jsonl_round_trip_and_errors_name_the_line(tmp_path, generated):
    path = tmp_path / "d.jsonl"
    sha = datasets.write_jsonl(generated["control"][:5], path)
    assert read_jsonl(path) == generated["control"][:5]
    assert sha == datasets.digest(generated["control"][:5])
    bad = tmp_path / "bad.jsonl"
    good = path.read_text().splitlines()[0]
    bad.write_text(
        "\n".join(
            [
                good,
                json.dumps(
                    {"messages": [{"role": "user", "content": "hi"}], "label": 1, "concept": "x", "split": "train"}
                ),
                json.dumps({"text": "a", "label": 2, "concept": "x", "split": "dev"}),
                "{not json",
            ]
        )
        + "\n"
    )
    with pytest.raises(ProbeDataError) as caught:
        read_jsonl(bad)
    message = str(caught.value)
    assert "3 invalid line(s)" in message
    assert "line 2:" in message and "last message must be the assistant turn" in message
    assert "line 3:" in message and "label" in message and "split" in message
    assert "line 4:" in message
    with pytest.raises(ProbeDataError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_unknown_concept_is_refused_with_the_known_ones():
    with pytest.raises(ProbeDataError, match="deception, insecure_code, control"):
        datasets.generate("power_seeking")


def test_deal_cuts_at_the_fractions_and_never_leaves_a_split_empty():
    dealt = datasets.deal([f"t{i}" for i in range(20)], "salt")
    assert Counter(dealt.values()) == {"train": 10, "calib": 5, "test": 5}
    assert set(datasets.deal(["a", "b", "c"], "salt").values()) == set(SPLITS)
    assert datasets.deal([f"t{i}" for i in range(20)], "salt") == dealt
