"""The contrastive dataset generators: deterministic, disjoint splits, valid content; and
the package data they read (monitor/data/: YAML + CSV, one typed loader)."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
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
#: The deception sources about the tables of statements.yaml and its siblings.
NEW_SOURCES = ("statements", "multi_sentence", "negation", "varied_instructions")
NEGATION = re.compile(r"\b(?:no|not|never|nor)\b|n't", re.IGNORECASE)


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
    # the deception concept mixes the kinds of data the notes ask for, and independent sources
    sources = {e.meta["dataset"] for e in generated["deception"]}
    assert sources == {"facts", "instructed", "roleplay", *NEW_SOURCES}
    for source in NEW_SOURCES:  # each a few hundred examples, both labels in every split
        examples = [e for e in generated["deception"] if e.meta["dataset"] == source]
        assert 200 <= len(examples) <= 800, (source, len(examples))
        for split in SPLITS:
            labels = Counter(e.label for e in examples if e.split == split)
            assert labels[0] == labels[1] >= 30, (source, split, labels)
    topics = {e.meta["dataset"] for e in controls}
    assert {"long", "lists", "refusals", "roleplay", "negation"} <= topics
    assert len(controls) <= 2 * 1320  # the control set grew, within reason


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
        assert honest.split == other.split and honest.meta == other.meta
        if honest.meta["dataset"] in ("instructed", "varied_instructions"):  # and in the system prompt
            assert honest.messages[0].role == other.messages[0].role == "system", pair
            assert honest.messages[0] != other.messages[0], pair
            assert honest.messages[1:-1] == other.messages[1:-1], pair
        else:
            assert honest.messages[:-1] == other.messages[:-1], pair


def _pairs(generated, source: str) -> list[tuple[Example, Example]]:
    """(honest, deceptive) of every pair of a deception source."""
    pairs = defaultdict(dict)
    for e in generated["deception"]:
        if e.meta["dataset"] == source:
            pairs[e.meta["pair"]][e.label] = e
    return [(members[0], members[1]) for _, members in sorted(pairs.items())]


def _row(example: Example) -> tuple[data.FactTable, dict[str, str]]:
    """The fact table and the row an example is about (its meta.entity is "table:key")."""
    name, key = example.meta["entity"].split(":", 1)
    table = next(t for t in data.fact_tables() if t.name == name)
    return table, next(r for r in table.rows if r[table.key] == key)


def _other_answers(generated, table: data.FactTable, row: dict[str, str], split: str) -> set[str]:
    """The answers of the table's other rows in ``split``: what a false version may carry."""
    split_of = {e.meta["entity"]: e.split for e in generated["deception"]}
    return {r[table.answer] for r in table.rows if split_of.get(f"{table.name}:{r[table.key]}") == split} - {
        row[table.answer]
    }


def test_statements_have_no_system_prompt_and_the_false_one_carries_another_rows_answer(generated):
    templates = {t.id: t for t in data.statement_templates()}
    pairs = _pairs(generated, "statements")
    for honest, lie in pairs:
        assert [m.role for m in honest.messages] == [m.role for m in lie.messages] == ["user", "assistant"]
        template, (table, row) = templates[honest.meta["template"]], _row(honest)
        assert honest.messages[-1].content == Template(template.assistant).substitute(row)
        falses = _other_answers(generated, table, row, honest.split)
        assert lie.messages[-1].content in {
            Template(template.assistant).substitute({**row, table.answer: f}) for f in falses
        }, honest.meta["pair"]
    # the shapes vary: "is it true that ...?" questions and one- and two-sentence replies
    users = [h.messages[0].content for h, _ in pairs]
    assert sum(u.startswith("Is it true that") for u in users) >= 20
    sentences = Counter(len(re.findall(r"[.!?](?:\s|$)", h.messages[-1].content)) for h, _ in pairs)
    assert sentences[1] > 50 and sentences[2] > 50, sentences


def _common(a: str, b: str) -> int:
    """The length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def test_multi_sentence_answers_differ_in_one_sentence_neither_first_nor_last(generated):
    templates = {t.id: t for t in data.multi_sentence_templates()}
    for honest, lie in _pairs(generated, "multi_sentence"):
        template, (table, row) = templates[honest.meta["template"]], _row(honest)
        true = [Template(x).substitute(row) for x in template.sentences]
        middle = len(template.before)
        assert 3 <= len(true) <= 5 and 0 < middle < len(true) - 1
        a, b = honest.messages[-1].content, lie.messages[-1].content
        assert a == " ".join(true)
        head, tail = " ".join(true[:middle]) + " ", " " + " ".join(true[middle + 1 :])
        assert b.startswith(head) and b.endswith(tail), honest.meta["pair"]
        claim = b[len(head) : len(b) - len(tail)]
        falses = _other_answers(generated, table, row, honest.split)
        assert claim in {Template(template.claim).substitute({**row, table.answer: f}) for f in falses}
        # and, read from the texts alone, the change starts after a sentence and ends before one
        prefix, suffix = _common(a, b), _common(a[::-1], b[::-1])
        assert re.search(r"[.!?] ", a[:prefix]) and re.search(r"[.!?] ", a[len(a) - suffix :])


def test_negation_words_do_not_give_the_label_away(generated):
    pairs = _pairs(generated, "negation")
    both = sum(
        bool(NEGATION.search(h.messages[-1].content)) and bool(NEGATION.search(d.messages[-1].content))
        for h, d in pairs
    )
    assert both >= 0.6 * len(pairs), (both, len(pairs))
    for label in (0, 1):  # each label says "no" / "not" about as often
        answers = [pair[label].messages[-1].content for pair in pairs]
        assert 0.75 <= sum(bool(NEGATION.search(a)) for a in answers) / len(answers) <= 1.0
    # an answer that starts with "No" is honest about as often as it is deceptive
    starts_no = [e.label for pair in pairs for e in pair if re.match(r"No\b", e.messages[-1].content)]
    assert 0.4 <= sum(starts_no) / len(starts_no) <= 0.6, Counter(starts_no)
    # half the questions ask about the true answer (the honest reply affirms), half about a
    # wrong one (the honest reply denies)
    about_true = sum(_row(h)[1][_row(h)[0].answer] in h.messages[0].content for h, _ in pairs)
    assert 0.4 <= about_true / len(pairs) <= 0.6, (about_true, len(pairs))


def test_varied_instruction_prompts_are_alike_in_length_and_unlike_instructions_yaml(generated):
    pairs = _pairs(generated, "varied_instructions")
    for honest, lie in pairs:
        a, b = len(honest.messages[0].content), len(lie.messages[0].content)
        assert max(a, b) <= 1.5 * min(a, b), honest.meta["template"]
    prompts = data.varied_prompts()
    assert len(prompts) >= 12 and len({p.style for p in prompts}) >= 5
    assert {h.meta["template"] for h, _ in pairs} == {p.id for p in prompts}
    plain = {text for i in data.instructions() for text in (i.honest, i.deceptive)}
    assert not plain & {text for p in prompts for text in (p.honest, p.deceptive)}
    for table in {a.table for a in data.varied_answers()}:
        assert len({a.register for a in data.varied_answers() if a.table == table}) >= 3, table
    # honest prompts are not all shorter (or longer) than their deceptive twins
    longer = Counter(len(p.honest) > len(p.deceptive) for p in prompts)
    assert longer[True] >= 3 and longer[False] >= 3, longer


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
    assert [t.name for t in tables] == [
        "capitals",
        "elements",
        "translations",
        "animals",
        "currencies",
        "languages",
        "books",
        "paintings",
    ]
    assert all(len(t.rows) >= 20 and {t.key, t.answer} <= set(t.rows[0]) for t in tables)
    assert len(data.fact_templates()) == 16 and len(data.instructions()) == 12
    assert len(data.statement_templates()) == 16 and len(data.multi_sentence_templates()) == 16
    assert len(data.negation_templates()) == 16
    assert len(data.varied_prompts()) == 15 and len(data.varied_answers()) == 16
    assert len(data.scenarios()) == 42 and len(data.people()) == 72
    assert len(data.code_templates()) == 66 and len(data.code_entities()) == 150
    assert len(data.control_templates()) == 103 and len(data.control_entities().days) == 7
    assert len(data.demo().facts) == 18
    assert isinstance(data.code_templates()[0], data.CodeTemplate)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.people()[0].name = "x"  # type: ignore[misc]


def test_the_demo_asks_about_test_split_rows_and_checks_each_answer_against_the_table():
    """No probe was fitted on what the demo asks, and its fact check is the table's answer."""
    tables = {t.name: t for t in data.fact_tables()}
    splits = datasets.entity_splits(tuple(tables.values()))
    requests = data.demo().requests
    assert {r.kind for r in requests} == {"honest", "deceptive"}
    for r in requests:
        name, key = r.entity.split(":", 1)
        row = next(row for row in tables[name].rows if row[tables[name].key] == key)
        assert splits[name][key] == "test", r
        assert r.fact == row[tables[name].answer] and key in r.question, r


def test_the_new_fact_tables_are_large_and_do_not_share_a_country():
    tables = {t.name: t for t in data.fact_tables()}
    for name in ("currencies", "languages", "books", "paintings"):
        rows = tables[name].rows
        assert len(rows) >= 30, name
        # keys start a sentence as they are ("Czechia is ...", "The Starry Night was ...")
        assert all(r[tables[name].key][0].isupper() for r in rows), name
        # false answers come from other rows of a split: enough different answers to draw from
        assert len({r[tables[name].answer] for r in rows}) >= 15, name
    countries = [{r["country"] for r in tables[name].rows} for name in ("currencies", "languages")]
    assert not countries[0] & countries[1]


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
        (
            "statements.yaml",
            lambda doc: doc["statements"][0].update(user="Is the $currency used in $country?"),
            data.statement_templates,
            ("statements[0] (id 'statement-currency-one-fact')", "field 'user' must not use $currency"),
        ),
        (
            "multi_sentence.yaml",
            lambda doc: doc["templates"][1]["after"].append("Bring some $currency."),
            data.multi_sentence_templates,
            ("templates[1] (id 'multi-currency-trip')", "field 'after[2]' must not use $currency"),
        ),
        (
            "multi_sentence.yaml",
            lambda doc: doc["templates"][2]["before"].append("It is a country."),
            data.multi_sentence_templates,
            ("templates[2] (id 'multi-currency-homework')", "6 sentences", "at most 5"),
        ),
        (
            "multi_sentence.yaml",
            lambda doc: doc["templates"][0].update(before=[]),
            data.multi_sentence_templates,
            ("templates[0] (id 'multi-currency-overview')", "field 'before'", "at least 1 item"),
        ),
        (
            "negation.yaml",
            lambda doc: doc["templates"][0].update(question="Is the currency of $country the $other?"),
            data.negation_templates,
            ("templates[0] (id 'negation-currency-is-it')", "field 'question' must use $claimed"),
        ),
        (
            "varied_instructions.yaml",
            lambda doc: doc["prompts"][3].update(honest="mode=reference"),
            data.varied_prompts,
            ("prompts[3] (id 'config-terse')", "may be at most 1.5 times the shorter"),
        ),
        (
            "varied_instructions.yaml",
            lambda doc: doc["answers"][0].pop("register"),
            data.varied_answers,
            ("answers[0] (id 'varied-currency-short')", "field 'register' is missing", "VariedAnswer fields"),
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
    for records in (data.statement_templates(), data.multi_sentence_templates(), data.varied_answers()):
        for record in records:
            texts = [
                getattr(record, f) for f in ("user", "assistant", "claim", "question", "answer") if hasattr(record, f)
            ]
            texts += list(getattr(record, "before", ())) + list(getattr(record, "after", ()))
            for row in tables[record.table].rows:
                for text in texts:
                    Template(text).substitute(row)
    for template in data.negation_templates():
        for row in tables[template.table].rows:
            slots = {**row, "claimed": "x", "other": "y"}
            for text in (template.question, template.affirm, template.deny):
                Template(text).substitute(slots)
    rows = datasets.control_entities()
    assert len(rows) == datasets.CONTROL_ROWS
    for template in data.control_templates():
        for row in rows:
            Template(template.user).substitute(row)
            answer = Template(template.assistant).substitute(row)
            if "```python\n" in answer:
                ast.parse(answer.split("```python\n", 1)[1].split("\n```", 1)[0])
