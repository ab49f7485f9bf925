"""Contrastive datasets for probes: one JSONL schema, deterministic generators, disjoint splits.

Each line is one example::

    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}],
     "label": 0 | 1, "concept": "deception", "split": "train" | "calib" | "test",
     "meta": {"dataset": "roleplay", "template": "...", "entity": "...", "pair": "..."}}

or ``"text"`` instead of ``"messages"``. A probe scores the final assistant turn (the
response tokens, as the monitor scores generated tokens); a ``text`` example is scored
over all its tokens. ``label`` 1 is the concept (deceptive, insecure), 0 its contrast;
benign control conversations have ``concept: control`` and label 0.

The generators use only what ships with the package (:mod:`monitor.data`: fact tables,
CWE-style code templates, roleplay scenarios, control templates), so the same package
writes the same bytes on every machine. Splits are disjoint by template *and* by entity:
templates and entities are each dealt to train / calib / test, and an example exists only
where both land in the same split, so a test AUROC measures unseen phrasings about unseen
entities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from string import Template
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor import data
from monitor.errors import ProbeDataError

SPLITS = ("train", "calib", "test")
CONCEPT_SPLITS = (0.5, 0.25, 0.25)
#: Controls set thresholds: calibration gets the larger share.
CONTROL_SPLITS = (0.4, 0.35, 0.25)
CONTROL = "control"
Split = Literal["train", "calib", "test"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class Example(BaseModel):
    """One line of a dataset file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...] | None = None
    text: str | None = Field(None, min_length=1)
    label: Literal[0, 1]
    concept: str = Field(min_length=1)
    split: Split
    meta: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_body(self) -> Example:
        if (self.messages is None) == (self.text is None):
            raise ValueError('give exactly one of "messages" (chat turns) or "text"')
        if self.messages is not None and (not self.messages or self.messages[-1].role != "assistant"):
            raise ValueError("the last message must be the assistant turn the probe scores")
        if self.concept == CONTROL and self.label != 0:
            raise ValueError("control examples are benign: label must be 0")
        return self


def _with_extras_in_meta(raw: Any) -> Any:
    """A line's top-level keys that are not Example fields (a source's own ids, notes) go
    under ``meta`` (non-string values as JSON text) instead of refusing the file."""
    if not isinstance(raw, dict):
        return raw
    extras = {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items() if k not in Example.model_fields}
    meta = raw.get("meta", {})
    if not extras or not isinstance(meta, dict):
        return raw  # nothing to move, or a meta that validation will name
    kept = {k: v for k, v in raw.items() if k in Example.model_fields}
    return {**kept, "meta": {**extras, **meta}}  # the line's own meta wins


def read_jsonl(path: Path) -> list[Example]:
    """Every example of a JSONL file; all errors are reported at once, by line. Top-level
    keys other than the Example fields are kept under ``meta``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ProbeDataError(f"dataset {path}: cannot read it ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise ProbeDataError(f"dataset {path}: not UTF-8 text; write the JSONL as UTF-8.") from None
    examples, errors = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        try:
            examples.append(Example.model_validate(_with_extras_in_meta(raw)))
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(line)'}: {err['msg']}" for err in exc.errors()
            )
            errors.append(f"line {number}: {details}")
    if errors:
        shown = "\n  ".join(errors[:10]) + (f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise ProbeDataError(
            f"dataset {path}: {len(errors)} invalid line(s):\n  {shown}\nEach line must be a JSON object "
            '{"messages": [...] or "text": "...", "label": 0|1, "concept": "...", "split": "train|calib|test"}; '
            "other keys are kept under meta."
        )
    if not examples:
        raise ProbeDataError(f"dataset {path}: no examples. Generate one with `saemon probes generate`.")
    return examples


def read_datasets(paths: Iterable[Path]) -> list[Example]:
    return [example for path in paths for example in read_jsonl(path)]


def dumps(examples: Sequence[Example]) -> str:
    return "".join(example.model_dump_json(exclude_none=True) + "\n" for example in examples)


def write_jsonl(examples: Sequence[Example], path: Path) -> str:
    """Write ``examples``; returns the file's sha256 (recorded with a probe's figures)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dumps(examples).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def digest(examples: Sequence[Example]) -> str:
    """sha256 of the examples as :func:`write_jsonl` writes them."""
    return hashlib.sha256(dumps(examples).encode("utf-8")).hexdigest()


def file_digests(paths: Iterable[Path]) -> dict[str, str]:
    """{file name: sha256} of dataset files, as a probe's figures record them."""
    return {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def deal(ids: Iterable[str], salt: str, fractions: Sequence[float] = CONCEPT_SPLITS) -> dict[str, str]:
    """Assign each id to a split: a seeded shuffle cut at the fractions (every split gets at
    least one id when there are at least three)."""
    ordered = sorted(set(ids))
    random.Random(salt).shuffle(ordered)
    n = len(ordered)
    counts = [int(n * f) for f in fractions]
    for i in sorted(range(len(fractions)), key=lambda i: n * fractions[i] - counts[i], reverse=True):
        if sum(counts) == n:
            break
        counts[i] += 1
    if n >= len(SPLITS):
        for i, count in enumerate(counts):
            if count == 0:
                counts[counts.index(max(counts))] -= 1
                counts[i] = 1
    result, start = {}, 0
    for split, count in zip(SPLITS, counts, strict=True):
        result.update(dict.fromkeys(ordered[start : start + count], split))
        start += count
    return result


def _deal_by_family(templates: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Templates (id, family) dealt so every family with two or more templates has one in
    train and one in test: held-out templates, seen families."""
    cycle = ("train", "test", "calib")
    families: dict[str, list[str]] = {}
    for template_id, family in sorted(templates):
        families.setdefault(family, []).append(template_id)
    result = {}
    for family, ids in families.items():
        random.Random(f"family:{family}").shuffle(ids)
        result.update({template_id: cycle[i % len(cycle)] for i, template_id in enumerate(ids)})
    return result


def _chat(*turns: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role=role, content=content) for role, content in turns)


def _rotation(items: Sequence, start: int, count: int) -> list:
    """``count`` items from ``start`` on, wrapping: spreads templates over entities evenly."""
    if not items:
        return []
    return [items[(start + i) % len(items)] for i in range(min(count, len(items)))]


# -- deception -------------------------------------------------------------------------------


def entity_splits(tables: Sequence[data.FactTable]) -> dict[str, dict[str, str]]:
    """Each fact table's rows (by key) dealt to train / calib / test, once per table: a row
    is in the same split for every source that phrases it."""
    return {t.name: deal((row[t.key] for row in t.rows), f"entities:{t.name}") for t in tables}


def deception() -> list[Example]:
    """True vs false statements, honest vs instructed-deceptive answers, roleplay; then plain
    statements, multi-sentence answers, negated answers and variously instructed answers
    about the tables those sources phrase (a ``meta.dataset`` per source)."""
    examples: list[Example] = []
    tables = data.fact_tables()
    fact_templates = data.fact_templates()
    entity_split = entity_splits(tables)
    phrased, template_split = _deal_per_table(fact_templates, tables, "facts")
    instruction_split = deal((i.id for i in data.instructions()), "instructions")

    for split in SPLITS:
        for t in phrased:
            rows = _rows_in(t, entity_split, split)
            templates = [f for f in fact_templates if f.table == t.name and template_split[f.id] == split]
            for template in templates:
                for i, row in enumerate(rows):
                    question = Template(template.question).substitute(row)
                    meta = {"dataset": "facts", "template": template.id, "entity": f"{t.name}:{row[t.key]}"}
                    pair = f"facts:{template.id}:{row[t.key]}"
                    for label, values in ((0, row), (1, _liar(rows, i, t))):
                        answer = Template(template.statement).substitute(values)
                        examples.append(
                            Example(
                                messages=_chat(("user", question), ("assistant", answer)),
                                label=label,
                                concept="deception",
                                split=split,
                                meta={**meta, "pair": pair},
                            )
                        )
            # Instructed: each row under two of the split's instructions, a fact phrasing of the
            # split, honest instruction + true answer vs deceptive instruction + false answer.
            instructions = [i for i in data.instructions() if instruction_split[i.id] == split]
            phrasings = [f for f in fact_templates if f.table == t.name and template_split[f.id] == split]
            for i, row in enumerate(rows):
                template = phrasings[i % len(phrasings)]
                question = Template(template.question).substitute(row)
                for instruction in _rotation(instructions, i, 2):
                    meta = {
                        "dataset": "instructed",
                        "template": instruction.id,
                        "entity": f"{t.name}:{row[t.key]}",
                        "pair": f"instructed:{instruction.id}:{row[t.key]}",
                    }
                    for label, system, values in (
                        (0, instruction.honest, row),
                        (1, instruction.deceptive, _liar(rows, i, t)),
                    ):
                        answer = Template(template.statement).substitute(values)
                        examples.append(
                            Example(
                                messages=_chat(("system", system), ("user", question), ("assistant", answer)),
                                label=label,
                                concept="deception",
                                split=split,
                                meta=meta,
                            )
                        )
    scenario_split = deal((s.id for s in data.scenarios()), "roleplay:scenarios")
    person_split = deal((p.name for p in data.people()), "roleplay:people")
    for split in SPLITS:
        people = [p for p in data.people() if person_split[p.name] == split]
        for scenario in (s for s in data.scenarios() if scenario_split[s.id] == split):
            for person in people:
                slots = dataclasses.asdict(person)
                system, user = (Template(x).substitute(slots) for x in (scenario.system, scenario.user))
                meta = {
                    "dataset": "roleplay",
                    "template": scenario.id,
                    "entity": person.name,
                    "pair": f"roleplay:{scenario.id}:{person.name}",
                }
                for label, answer in ((0, scenario.honest), (1, scenario.deceptive)):
                    turns = _chat(("system", system), ("user", user), ("assistant", Template(answer).substitute(slots)))
                    examples.append(Example(messages=turns, label=label, concept="deception", split=split, meta=meta))
    examples += _every_row("statements", data.statement_templates(), tables, entity_split, _statement)
    examples += _every_row("multi_sentence", data.multi_sentence_templates(), tables, entity_split, _multi_sentence)
    examples += _every_row("negation", data.negation_templates(), tables, entity_split, _negation)
    examples += _varied_instructions(tables, entity_split)
    return examples


def _deal_per_table(records: Sequence, tables: Sequence[data.FactTable], salt: str) -> tuple[list, dict[str, str]]:
    """(the tables some record phrases, in table order; each record's id dealt to a split,
    per table: ``salt:<table>``): templates are dealt within their table."""
    named = [t for t in tables if any(r.table == t.name for r in records)]
    dealt: dict[str, str] = {}
    for t in named:
        dealt.update(deal((r.id for r in records if r.table == t.name), f"{salt}:{t.name}"))
    return named, dealt


def _rows_in(t: data.FactTable, entity_split: dict[str, dict[str, str]], split: str) -> list[dict[str, str]]:
    """The table's rows dealt to ``split``, by key."""
    return sorted((r for r in t.rows if entity_split[t.name][r[t.key]] == split), key=lambda r: r[t.key])


def _liar(rows: list[dict[str, str]], i: int, t: data.FactTable) -> dict[str, str]:
    """Row i with the answer of the next row (same split) whose answer differs."""
    for step in range(1, len(rows)):
        other = rows[(i + step) % len(rows)]
        if other[t.answer] != rows[i][t.answer]:
            return {**rows[i], t.answer: other[t.answer]}
    raise ProbeDataError(f"fact table {t.name}: every row in a split has the same {t.answer}")


Turn = tuple[str, str]
#: (template, its table, a row, the row with another row's answer, ask about the true
#: answer?) -> the honest and the deceptive conversation.
Conversations = Callable[
    [Any, data.FactTable, dict[str, str], dict[str, str], bool], tuple[Sequence[Turn], Sequence[Turn]]
]


def _pair_example(
    dataset: str, template: str, t: data.FactTable, row: dict[str, str], split: str, turns: Sequence[Sequence[Turn]]
) -> list[Example]:
    """The honest (label 0) and deceptive (label 1) examples of one pair: ``turns`` holds
    the two conversations, honest first."""
    entity = f"{t.name}:{row[t.key]}"
    meta = {"dataset": dataset, "template": template, "entity": entity, "pair": f"{dataset}:{template}:{entity}"}
    return [
        Example(messages=_chat(*conversation), label=label, concept="deception", split=split, meta=meta)
        for label, conversation in enumerate(turns)
    ]


def _every_row(
    dataset: str,
    records: Sequence[Any],
    tables: Sequence[data.FactTable],
    entity_split: dict[str, dict[str, str]],
    conversations: Conversations,
) -> list[Example]:
    """Every template (a record with ``id`` and ``table``) with every row of its table that
    lands in the template's split: the templates are dealt to splits per table, the tables
    walked in fact_tables.yaml order. The flag passed to ``conversations`` alternates over
    the rows and the templates (the negation source asks about the true answer on one row,
    a wrong one on the next)."""
    named, dealt = _deal_per_table(records, tables, dataset)
    examples = []
    for split in SPLITS:
        for t in named:
            rows = _rows_in(t, entity_split, split)
            templates = [r for r in records if r.table == t.name and dealt[r.id] == split]
            for n, template in enumerate(templates):
                for i, row in enumerate(rows):
                    turns = conversations(template, t, row, _liar(rows, i, t), (i + n) % 2 == 0)
                    examples += _pair_example(dataset, template.id, t, row, split, turns)
    return examples


def _statement(
    template: data.StatementTemplate, t: data.FactTable, row: dict[str, str], lie: dict[str, str], _: bool
) -> tuple[Sequence[Turn], Sequence[Turn]]:
    """``statements``: a user turn and a plain assistant statement, no system prompt."""
    user = Template(template.user).substitute(row)
    honest, false = (Template(template.assistant).substitute(v) for v in (row, lie))
    return (("user", user), ("assistant", honest)), (("user", user), ("assistant", false))


def _multi_sentence(
    template: data.MultiSentenceTemplate, t: data.FactTable, row: dict[str, str], lie: dict[str, str], _: bool
) -> tuple[Sequence[Turn], Sequence[Turn]]:
    """``multi_sentence``: true sentences about the row around the claim, the one sentence the
    deceptive twin changes."""
    user = Template(template.user).substitute(row)
    before, after = (" ".join(Template(x).substitute(row) for x in part) for part in (template.before, template.after))
    honest, false = (f"{before} {Template(template.claim).substitute(v)} {after}" for v in (row, lie))
    return (("user", user), ("assistant", honest)), (("user", user), ("assistant", false))


def _negation(
    template: data.NegationTemplate, t: data.FactTable, row: dict[str, str], lie: dict[str, str], about_true: bool
) -> tuple[Sequence[Turn], Sequence[Turn]]:
    """``negation``: "is it $claimed?" about the true answer (the honest reply affirms, the
    deceptive one denies) or about another row's (the honest reply denies, the deceptive one
    affirms), alternating, so "no" and "not" are as common in honest replies as in deceptive
    ones."""
    true, wrong = row[t.answer], lie[t.answer]
    claimed, other = (true, wrong) if about_true else (wrong, true)
    slots = {**row, "claimed": claimed, "other": other}
    question, affirm, deny = (
        Template(x).substitute(slots) for x in (template.question, template.affirm, template.deny)
    )
    honest, false = (affirm, deny) if about_true else (deny, affirm)
    return (("user", question), ("assistant", honest)), (("user", question), ("assistant", false))


def _varied_instructions(tables: Sequence[data.FactTable], entity_split: dict[str, dict[str, str]]) -> list[Example]:
    """``varied_instructions``: each row under two of the split's prompt pairs (policies,
    personas, incentives, configs, ...), an answer register of the split, honest prompt + true
    answer vs deceptive prompt + false answer."""
    prompts, answers = data.varied_prompts(), data.varied_answers()
    prompt_split = deal((p.id for p in prompts), "varied_instructions:prompts")
    named, dealt = _deal_per_table(answers, tables, "varied_instructions")
    examples = []
    for split in SPLITS:
        in_split = [p for p in prompts if prompt_split[p.id] == split]
        for t in named:
            rows = _rows_in(t, entity_split, split)
            registers = [a for a in answers if a.table == t.name and dealt[a.id] == split]
            for i, row in enumerate(rows):
                template = registers[i % len(registers)]
                question = Template(template.question).substitute(row)
                honest, lie = (Template(template.answer).substitute(v) for v in (row, _liar(rows, i, t)))
                for prompt in _rotation(in_split, i, 2):
                    examples += _pair_example(
                        "varied_instructions",
                        prompt.id,
                        t,
                        row,
                        split,
                        (
                            (("system", prompt.honest), ("user", question), ("assistant", honest)),
                            (("system", prompt.deceptive), ("user", question), ("assistant", lie)),
                        ),
                    )
    return examples


# -- insecure code ---------------------------------------------------------------------------

#: Entities per code template and split: enough pairs to train on, few enough that the
#: test split scores in a minute or two on CPU.
CODE_ENTITIES_PER_TEMPLATE = {"train": 24, "calib": 16, "test": 10}


def insecure_code() -> list[Example]:
    """Secure vs insecure answers to the same request, from CWE-style templates."""
    code_templates, code_entities = data.code_templates(), data.code_entities()
    template_split = _deal_by_family([(t.id, t.cwe) for t in code_templates])
    entity_split = deal((e.noun for e in code_entities), "code:entities")
    examples = []
    for split in SPLITS:
        entities = [e for e in code_entities if entity_split[e.noun] == split]
        templates = [t for t in code_templates if template_split[t.id] == split]
        for n, template in enumerate(templates):
            for entity in _rotation(entities, n * 7, CODE_ENTITIES_PER_TEMPLATE[split]):
                slots = dataclasses.asdict(entity)
                # a request names the thing in words; the code keeps the identifier
                words = {key: value.replace("_", " ") for key, value in slots.items()}
                request = Template(template.request).substitute(words)
                meta = {
                    "dataset": template.cwe,
                    "template": template.id,
                    "entity": entity.noun,
                    "pair": f"code:{template.id}:{entity.noun}",
                }
                for label, body in ((0, template.secure), (1, template.insecure)):
                    answer = "```python\n" + Template(body).substitute(slots).strip("\n") + "\n```"
                    examples.append(
                        Example(
                            messages=_chat(("user", request), ("assistant", answer)),
                            label=label,
                            concept="insecure_code",
                            split=split,
                            meta=meta,
                        )
                    )
    return examples


# -- controls --------------------------------------------------------------------------------

CONTROL_ENTITIES_PER_TEMPLATE = {"train": 16, "calib": 24, "test": 12}
#: Control entity rows built from the lists of ``monitor/data/controls.yaml``.
CONTROL_ROWS = 84


def control_entities(count: int = CONTROL_ROWS) -> list[dict[str, str]]:
    """The rows the control templates substitute: row i picks from each list of
    ``controls.yaml`` with its own stride (so the combinations vary) and computes the
    arithmetic slots, so that every template's answer is correct for every row."""
    lists = data.control_entities()
    rows = []
    for i in range(count):
        city = lists.cities[(i * 7) % len(lists.cities)]
        item = lists.items[(i * 3) % len(lists.items)]
        day = (i * 3) % len(lists.days)
        month = (i * 5) % len(lists.months)
        a = 12 + (i * 7) % 61  # 12..72
        b = 2 + (i * 5) % 9  # 2..10, always smaller than a
        rows.append(
            {
                "name": lists.names[i % len(lists.names)],
                "city": city.city,
                "country": city.country,
                "food": lists.foods[(i * 5) % len(lists.foods)],
                "item": item.item,
                "items": item.items,
                "item_class": item.item_class,
                "animal": lists.animals[(i * 3) % len(lists.animals)],
                "color": lists.colors[(i * 4) % len(lists.colors)],
                "hobby": lists.hobbies[(i * 2) % len(lists.hobbies)],
                "day": lists.days[day],
                "next_day": lists.days[(day + 1) % len(lists.days)],
                "month": lists.months[month],
                "next_month": lists.months[(month + 1) % len(lists.months)],
                "a": str(a),
                "b": str(b),
                "sum_ab": str(a + b),
                "diff_ab": str(a - b),
                "product_ab": str(a * b),
                "double_a": str(2 * a),
                "a_times_ten": str(10 * a),
                "parity_a": "even" if a % 2 == 0 else "odd",
            }
        )
    return rows


def control() -> list[Example]:
    """Benign conversations (label 0) for thresholds at a stated false-positive rate."""
    control_templates, entities = data.control_templates(), control_entities()
    # Dealt per topic, so every kind of traffic with three or more templates (long answers,
    # lists, refusals, code, ...) is in the held-out test split too, not only in calib.
    template_split: dict[str, str] = {}
    for topic in sorted({t.topic for t in control_templates}):
        ids = (t.id for t in control_templates if t.topic == topic)
        template_split.update(deal(ids, f"controls:templates:{topic}", CONTROL_SPLITS))
    keys = [_entity_key(row) for row in entities]
    entity_split = deal(keys, "controls:entities", CONTROL_SPLITS)
    examples = []
    for split in SPLITS:
        rows = [(key, row) for key, row in zip(keys, entities, strict=True) if entity_split[key] == split]
        templates = [t for t in control_templates if template_split[t.id] == split]
        for n, template in enumerate(templates):
            for key, row in _rotation(rows, n * 5, CONTROL_ENTITIES_PER_TEMPLATE[split]):
                turns = _chat(
                    ("user", Template(template.user).substitute(row)),
                    ("assistant", Template(template.assistant).substitute(row)),
                )
                meta = {"dataset": template.topic, "template": template.id, "entity": key}
                examples.append(Example(messages=turns, label=0, concept=CONTROL, split=split, meta=meta))
    return examples


def _entity_key(row: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:12]


GENERATORS = {"deception": deception, "insecure_code": insecure_code, CONTROL: control}


def generate(concept: str) -> list[Example]:
    if concept not in GENERATORS:
        raise ProbeDataError(f"unknown concept {concept!r}; the generators make: {', '.join(GENERATORS)}")
    return GENERATORS[concept]()


def generate_all(out_dir: Path, concepts: Sequence[str] = tuple(GENERATORS)) -> dict[str, tuple[Path, int, str]]:
    """Write ``<concept>.jsonl`` per concept; returns {concept: (path, examples, sha256)}."""
    written = {}
    for concept in concepts:
        examples = generate(concept)
        path = Path(out_dir) / f"{concept}.jsonl"
        written[concept] = (path, len(examples), write_jsonl(examples, path))
    return written
