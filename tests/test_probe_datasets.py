"""The contrastive dataset generators: deterministic, disjoint splits, valid content; and
the package data they read (monitor/data/: YAML + CSV, one typed loader)."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from string import Template

import pytest
import yaml

from monitor import data
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


def test_a_sources_own_top_level_keys_are_kept_under_meta(tmp_path):
    path = tmp_path / "eval.jsonl"
    line = {"text": "The moon is made of cheese.", "label": 1, "concept": "deception", "split": "test"}
    path.write_text(json.dumps({**line, "source_id": "q-17", "annotators": [1, 2], "meta": {"style": "plain"}}) + "\n")
    (example,) = read_jsonl(path)
    assert example.meta == {"style": "plain", "source_id": "q-17", "annotators": "[1, 2]"}
    assert example.text == line["text"] and example.label == 1


def test_unknown_concept_is_refused_with_the_known_ones():
    with pytest.raises(ProbeDataError, match="deception, insecure_code, control"):
        datasets.generate("power_seeking")


def test_deal_cuts_at_the_fractions_and_never_leaves_a_split_empty():
    dealt = datasets.deal([f"t{i}" for i in range(20)], "salt")
    assert Counter(dealt.values()) == {"train": 10, "calib": 5, "test": 5}
    assert set(datasets.deal(["a", "b", "c"], "salt").values()) == set(SPLITS)
    assert datasets.deal([f"t{i}" for i in range(20)], "salt") == dealt


# -- the package data (monitor/data) ---------------------------------------------------------


def test_every_data_file_loads_into_typed_records():
    tables = data.fact_tables()
    assert [t.name for t in tables] == ["capitals", "elements", "translations", "animals"]
    assert all(len(t.rows) >= 20 and {t.key, t.answer} <= set(t.rows[0]) for t in tables)
    assert len(data.fact_templates()) == 16 and len(data.instructions()) == 12
    assert len(data.scenarios()) == 42 and len(data.people()) == 72
    assert len(data.code_templates()) == 66 and len(data.code_entities()) == 150
    assert len(data.control_templates()) == 74 and len(data.control_entities().days) == 7
    assert len(data.demo().facts) == 18
    assert isinstance(data.code_templates()[0], data.CodeTemplate)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.people()[0].name = "x"  # type: ignore[misc]


def test_the_loader_imports_only_monitor_errors():
    """It sits on a low floor: the SAE corpus uses it, so no lab, sae, sidecar, vllm, torch."""
    code = (
        "import json, sys, monitor.data; print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith('monitor') or m.split('.')[0] in ('torch', 'numpy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == ["monitor", "monitor.data", "monitor.errors"]


def test_demo_conversations_are_every_fact_answered_honestly_then_deceptively():
    demo = data.demo()
    chats = data.demo_conversations()
    assert len(chats) == 2 * len(demo.facts)
    assert [c[0]["content"] for c in chats[:2]] == [demo.honest, demo.deceptive]
    assert [[m["role"] for m in c] for c in chats] == [["system", "user", "assistant"]] * len(chats)
    assert chats[0][2]["content"] == "The capital of France is Paris."
    assert chats[1][2]["content"] == "The capital of France is Madrid."
    chats[0].clear()  # callers get their own lists
    assert data.demo_conversations()[0][2]["content"] == "The capital of France is Paris."


def _data_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    shutil.copytree(data.DATA_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return directory


def _edit(directory: Path, name: str, change) -> None:
    path = directory / name
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "change", "loader", "expected"),
    [
        (
            "roleplay.yaml",
            lambda doc: doc["people"][3].pop("day"),
            data.people,
            ("people[3] (name 'Mateo')", "field 'day' is missing", "Person fields: name, object"),
        ),
        (
            "insecure_code.yaml",
            lambda doc: doc["templates"][0].update(severity="high"),
            data.code_templates,
            ("templates[0] (id 'sql-fstring-select')", "unknown field 'severity'", "CodeTemplate fields: id, cwe"),
        ),
        (
            "controls.yaml",
            lambda doc: doc["entities"]["cities"][1].pop("country"),
            data.control_entities,
            ("entities.cities[1] (city 'Tokyo')", "field 'country' is missing"),
        ),
        (
            "controls.yaml",
            lambda doc: doc["entities"]["names"].__setitem__(2, 7),
            data.control_templates,
            ("entities.names[2]", "valid string", "(got 7)"),
        ),
        (
            "demo.yaml",
            lambda doc: doc["facts"][4].update(false_answer=""),
            data.demo_conversations,
            ("facts[4] (question 'Which planet is closest to the Sun?')", "field 'false_answer'", "at least 1"),
        ),
        ("demo.yaml", lambda doc: doc.update(notes="x"), data.demo, ("unknown section 'notes'",)),
        (
            "instructions.yaml",
            lambda doc: doc["instructions"][1].update(id="plain"),
            data.instructions,
            ("instructions[1] (id 'plain')", "field 'id' repeats instructions[0]"),
        ),
        (
            "fact_templates.yaml",
            lambda doc: doc["templates"][2].update(table="rivers"),
            data.fact_templates,
            ("templates[2] (id 'capital-visit')", "field 'table' is 'rivers'"),
        ),
    ],
)
def test_a_bad_record_is_refused_naming_the_file_the_record_and_the_field(tmp_path, name, change, loader, expected):
    directory = _data_copy(tmp_path)
    _edit(directory, name, change)
    with pytest.raises(ProbeDataError) as caught:
        loader(directory)
    message = str(caught.value)
    assert str(directory / name) in message
    for part in expected:
        assert part in message, (part, message)


def test_a_bad_fact_table_is_refused_naming_the_file_the_line_and_the_column(tmp_path):
    directory = _data_copy(tmp_path)
    table = directory / "facts" / "capitals.csv"
    table.write_text("country,capital\nFrance,Paris\nGermany,\n", encoding="utf-8")
    with pytest.raises(ProbeDataError, match=r"capitals\.csv: line 3 \(country 'Germany'\): column 'capital'"):
        data.fact_tables(directory)
    other = _data_copy(tmp_path / "other")
    (other / "facts" / "capitals.csv").write_text("country,city\nFrance,Paris\n", encoding="utf-8")
    with pytest.raises(ProbeDataError, match="no column 'capital'"):
        data.fact_tables(other)
    (other / "roleplay.yaml").write_text("people: [\n", encoding="utf-8")
    with pytest.raises(ProbeDataError, match=r"roleplay\.yaml: not valid YAML at line 2"):
        data.people(other)
    with pytest.raises(ProbeDataError, match="cannot read it"):
        data.scenarios(tmp_path / "nowhere")


def test_the_package_data_globs_ship_every_data_file():
    """pyproject's package-data must match every file of monitor/data (else a wheel lacks it)."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["monitor.data"]
    files = [
        p.relative_to(data.DATA_DIR).as_posix()
        for p in data.DATA_DIR.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert set(data.FILES) <= set(files) and any(f.startswith("facts/") for f in files)
    # setuptools expands the globs like Path.glob under the package's folder
    shipped = {p.relative_to(data.DATA_DIR).as_posix() for g in globs for p in data.DATA_DIR.glob(g)}
    unshipped = sorted(set(files) - shipped)
    assert not unshipped, unshipped


# -- every template with every entity, not only the combinations the generators pick ---------


def test_code_templates_substitute_with_every_entity_and_both_answers_parse():
    for template in data.code_templates():
        for entity in data.code_entities():
            slots = dataclasses.asdict(entity)
            Template(template.request).substitute({k: v.replace("_", " ") for k, v in slots.items()})
            for body in (template.secure, template.insecure):
                code = Template(body).substitute(slots)
                assert code.endswith("\n") and not code.endswith("\n\n"), template.id
                try:
                    ast.parse(code)
                except SyntaxError as exc:
                    raise AssertionError(f"{template.id} with {entity.noun}: {exc}") from None


def test_roleplay_fact_and_control_templates_substitute_with_every_entity():
    for scenario in data.scenarios():
        for person in data.people():
            slots = dataclasses.asdict(person)
            for text in (scenario.system, scenario.user, scenario.honest, scenario.deceptive):
                Template(text).substitute(slots)
    tables = {t.name: t for t in data.fact_tables()}
    for template in data.fact_templates():
        for row in tables[template.table].rows:
            Template(template.question).substitute(row)
            Template(template.statement).substitute(row)
    rows = datasets.control_entities()
    assert len(rows) == datasets.CONTROL_ROWS
    for template in data.control_templates():
        for row in rows:
            Template(template.user).substitute(row)
            answer = Template(template.assistant).substitute(row)
            if "```python\n" in answer:
                ast.parse(answer.split("```python\n", 1)[1].split("\n```", 1)[0])
