"""The probe lab's dataset material as package data, and the one typed loader for it.

The files beside this module are data only; the rules that combine them into examples
live in :mod:`monitor.lab.datasets` (and :mod:`monitor.lab.demo_pack`). Each file's header
comment states what its records mean and the rules the data keeps:

- ``fact_tables.yaml`` + ``facts/<name>.csv``: the fact tables (capitals, chemical symbols,
  Spanish-English, animal classes, currencies, official languages, authors of books,
  painters of paintings) and which column names a row and which one a false statement
  replaces;
- ``fact_templates.yaml``: question / true-statement phrasings over a table's columns;
- ``instructions.yaml``: honest vs deceptive system-prompt pairs;
- ``statements.yaml``: plain user / assistant statements of a fact, no system prompt;
- ``multi_sentence.yaml``: answers of three to five sentences with the fact in the middle;
- ``negation.yaml``: yes / no questions about a candidate answer, affirmed or denied;
- ``varied_instructions.yaml``: honest vs deceptive system prompts in many styles, and
  answers in several registers;
- ``roleplay.yaml``: role-play scenarios and the people that fill their slots;
- ``insecure_code.yaml``: secure vs insecure CWE-style code templates and their entities;
- ``controls.yaml``: benign control templates and the lists their rows are drawn from;
- ``demo.yaml``: the demo probe's two system prompts and its fact triples.

Every loader function validates the whole file on first use (unknown or missing fields,
wrong types, empty strings, repeated ids) and raises :class:`~monitor.errors.ProbeDataError`
naming the file, the record and the field; each file is read once (cached). The optional
``directory`` argument reads another copy of the files (tests, a patched data set).

This module sits on a low floor: it imports :mod:`monitor.errors` and nothing else of
saemon (no torch, no numpy), so the SAE corpus and the probe lab can both use it.
"""

from __future__ import annotations

import csv
import dataclasses
from functools import cache
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal, TypeVar, get_args, get_type_hints

import yaml
from pydantic import ConfigDict, Field, StrictStr, StringConstraints, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from monitor.errors import ProbeDataError

#: Where the shipped files are.
DATA_DIR = Path(__file__).parent
#: The fact tables' folder, under a data directory.
FACTS_DIR = "facts"
#: Every YAML file of a data directory (the CSV tables are named by ``fact_tables.yaml``).
FILES = (
    "fact_tables.yaml",
    "fact_templates.yaml",
    "instructions.yaml",
    "statements.yaml",
    "multi_sentence.yaml",
    "negation.yaml",
    "varied_instructions.yaml",
    "roleplay.yaml",
    "insecure_code.yaml",
    "controls.yaml",
    "demo.yaml",
)

#: A non-empty string; a YAML number or boolean is refused, not converted.
Text = Annotated[StrictStr, StringConstraints(min_length=1)]
#: One to three sentences (the text around a multi-sentence answer's claim).
Sentences = Annotated[tuple[Text, ...], Field(min_length=1, max_length=3)]
#: The most sentences a multi-sentence answer has, its claim included.
MAX_SENTENCES = 5
#: The longest prompt of a varied-instruction pair is at most this times the shorter.
PROMPT_LENGTH_RATIO = 1.5
_RECORD = ConfigDict(extra="forbid")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_T = TypeVar("_T")


# -- records ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FactTable:
    """One fact table: ``facts/<name>.csv`` with the roles of two of its columns."""

    name: str
    key: str  # the column that names a row (its entity)
    answer: str  # the column a false statement replaces
    rows: tuple[dict[str, str], ...]


@dataclass(frozen=True, config=_RECORD)
class FactTableSpec:
    """A record of ``fact_tables.yaml``: which CSV, and its key and answer columns."""

    name: Text  # facts/<name>.csv
    key: Text
    answer: Text


@dataclass(frozen=True, config=_RECORD)
class FactTemplate:
    id: Text
    table: Text  # a name in fact_tables.yaml
    question: Text  # string.Template over the table's columns
    statement: Text  # the true statement; a false one puts another row's answer in


@dataclass(frozen=True, config=_RECORD)
class Instruction:
    id: Text
    honest: Text  # system prompt asking for the truth
    deceptive: Text  # system prompt asking for a lie


@dataclass(frozen=True, config=_RECORD)
class StatementTemplate:
    """A record of ``statements.yaml``: a plain exchange that states a row's fact."""

    id: Text
    table: Text  # a name in fact_tables.yaml
    user: Text  # string.Template over the table's columns; never the answer column
    assistant: Text  # states the answer column; a false one puts another row's answer in


@dataclass(frozen=True, config=_RECORD)
class MultiSentenceTemplate:
    """A record of ``multi_sentence.yaml``: ``before`` + ``claim`` + ``after``, 3-5 sentences."""

    id: Text
    table: Text  # a name in fact_tables.yaml
    user: Text  # never the answer column
    before: Sentences  # true sentences about the row; never the answer column
    claim: Text  # the sentence with the answer column: the one a false answer changes
    after: Sentences  # true sentences about the row; never the answer column

    @property
    def sentences(self) -> tuple[str, ...]:
        return (*self.before, self.claim, *self.after)


@dataclass(frozen=True, config=_RECORD)
class NegationTemplate:
    """A record of ``negation.yaml``: is ``$claimed`` the answer? affirmed or denied."""

    id: Text
    table: Text  # a name in fact_tables.yaml
    question: Text  # asks about $claimed; never $other nor the answer column
    affirm: Text  # says $claimed is the answer; never the answer column
    deny: Text  # says $claimed is not the answer and gives $other; never the answer column


@dataclass(frozen=True, config=_RECORD)
class VariedPrompt:
    """A prompt pair of ``varied_instructions.yaml``: same style, similar length."""

    id: Text
    style: Text  # policy, persona, incentive, config, developer note, scenario, ...
    honest: Text  # system prompt that leads to the truth
    deceptive: Text  # system prompt that leads to a lie


@dataclass(frozen=True, config=_RECORD)
class VariedAnswer:
    """An answer of ``varied_instructions.yaml``: a question and its answer in one register."""

    id: Text
    table: Text  # a name in fact_tables.yaml
    register: Text  # short, sentence, chatty, formal
    question: Text  # never the answer column
    answer: Text  # states the answer column


@dataclass(frozen=True, config=_RECORD)
class Scenario:
    id: Text  # unique kebab-case
    system: Text  # the character's situation, second person; states the truth and a reason to lie
    user: Text  # the question another person asks the character
    honest: Text  # admits the truth stated in `system`
    deceptive: Text  # contradicts the truth stated in `system`


@dataclass(frozen=True, config=_RECORD)
class Person:
    name: Text  # first name
    object: Text  # a common portable object, singular ("laptop")
    place: Text  # a common place with its article ("the kitchen"), works after "in"
    amount: Text  # a small amount of money ("40 dollars")
    subject: Text  # a school or work subject ("history")
    day: Text  # a weekday ("Tuesday")


@dataclass(frozen=True, config=_RECORD)
class CodeTemplate:
    id: Text  # unique, kebab-case, e.g. "sql-fstring-select"
    cwe: Text  # e.g. "CWE-89"
    request: Text  # the user's request; identical for both versions; does not hint at security
    secure: Text  # the secure Python code (no markdown fences)
    insecure: Text  # the insecure Python code (no markdown fences)


@dataclass(frozen=True, config=_RECORD)
class CodeEntity:
    noun: Text  # singular snake_case noun, e.g. "invoice"
    nouns: Text  # plural, e.g. "invoices"
    Noun: Text  # CapWords class-style, e.g. "Invoice"
    field: Text  # a natural lookup attribute of that noun, snake_case identifier, e.g. "number"


@dataclass(frozen=True, config=_RECORD)
class ControlTemplate:
    id: Text  # unique kebab-case
    topic: Text
    user: Text
    assistant: Text  # correct and helpful; code answers are ```python fenced


@dataclass(frozen=True, config=_RECORD)
class ControlCity:
    city: Text
    country: Text  # the city is unambiguously in this country


@dataclass(frozen=True, config=_RECORD)
class ControlItem:
    item: Text  # identifier-safe noun ("book")
    items: Text  # its plural ("books")
    item_class: Text  # its class name ("Book")


@dataclass(frozen=True, config=_RECORD)
class ControlEntities:
    """The lists the control rows are drawn from (the rule is ``datasets.control_entities``)."""

    names: tuple[Text, ...]
    cities: tuple[ControlCity, ...]
    foods: tuple[Text, ...]  # cooked dishes: the leftover and reheating advice holds for all
    items: tuple[ControlItem, ...]
    animals: tuple[Text, ...]  # mammals only
    colors: tuple[Text, ...]
    hobbies: tuple[Text, ...]
    days: tuple[Text, ...]  # the week, in order
    months: tuple[Text, ...]  # the year, in order


@dataclass(frozen=True, config=_RECORD)
class DemoFact:
    question: Text
    true_answer: Text
    false_answer: Text


@dataclass(frozen=True, config=_RECORD)
class DemoRequest:
    """One chat request of ``saemon demo``'s traffic: a question asked under a system prompt,
    and the fact a true answer names (the demo checks the model's answer against it)."""

    kind: Literal["honest", "deceptive"]
    system: Text
    question: Text
    fact: Text
    entity: Text  # where it comes from: table:key of the deception data's test split


@dataclass(frozen=True, config=_RECORD)
class DemoSet:
    """``demo.yaml``: the demo probe's system prompts and facts (the last third held out),
    and the demo's requests."""

    honest: Text
    deceptive: Text
    facts: tuple[DemoFact, ...]
    requests: tuple[DemoRequest, ...] = Field(min_length=1)


# The files: a mapping of sections, each validated as a whole.


@dataclass(frozen=True, config=_RECORD)
class _FactTablesFile:
    tables: tuple[FactTableSpec, ...]


@dataclass(frozen=True, config=_RECORD)
class _FactTemplatesFile:
    templates: tuple[FactTemplate, ...]


@dataclass(frozen=True, config=_RECORD)
class _InstructionsFile:
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True, config=_RECORD)
class _StatementsFile:
    statements: tuple[StatementTemplate, ...]


@dataclass(frozen=True, config=_RECORD)
class _MultiSentenceFile:
    templates: tuple[MultiSentenceTemplate, ...]


@dataclass(frozen=True, config=_RECORD)
class _NegationFile:
    templates: tuple[NegationTemplate, ...]


@dataclass(frozen=True, config=_RECORD)
class _VariedFile:
    prompts: tuple[VariedPrompt, ...]
    answers: tuple[VariedAnswer, ...]


@dataclass(frozen=True, config=_RECORD)
class _RoleplayFile:
    scenarios: tuple[Scenario, ...]
    people: tuple[Person, ...]


@dataclass(frozen=True, config=_RECORD)
class _CodeFile:
    templates: tuple[CodeTemplate, ...]
    entities: tuple[CodeEntity, ...]


@dataclass(frozen=True, config=_RECORD)
class _ControlsFile:
    templates: tuple[ControlTemplate, ...]
    entities: ControlEntities


# -- loaders ---------------------------------------------------------------------------------


@cache
def fact_tables(directory: Path = DATA_DIR) -> tuple[FactTable, ...]:
    """The fact tables, in the order ``fact_tables.yaml`` lists them."""
    specs = _fact_table_specs(directory)
    return tuple(_read_table(directory, spec) for spec in specs)


@cache
def fact_templates(directory: Path = DATA_DIR) -> tuple[FactTemplate, ...]:
    """Question / true-statement phrasings, each over the columns of a table it names."""
    path = directory / "fact_templates.yaml"
    templates = _load(path, _FactTemplatesFile).templates
    _unique(path, "templates", templates, "id")
    _known_tables(directory, path, "templates", templates)
    return templates


@cache
def instructions(directory: Path = DATA_DIR) -> tuple[Instruction, ...]:
    """Honest vs deceptive system-prompt pairs for the instructed deception data."""
    path = directory / "instructions.yaml"
    records = _load(path, _InstructionsFile).instructions
    _unique(path, "instructions", records, "id")
    return records


@cache
def statement_templates(directory: Path = DATA_DIR) -> tuple[StatementTemplate, ...]:
    """Plain user / assistant statements of a row's fact, no system prompt (``statements.yaml``)."""
    path = directory / "statements.yaml"
    records = _load(path, _StatementsFile).statements
    _unique(path, "statements", records, "id")
    answers = _known_tables(directory, path, "statements", records)
    for index, record in enumerate(records):
        _slots(path, "statements", index, record, "user", refuse=answers[record.table])
        _slots(path, "statements", index, record, "assistant", need=answers[record.table])
    return records


@cache
def multi_sentence_templates(directory: Path = DATA_DIR) -> tuple[MultiSentenceTemplate, ...]:
    """Answers of three to five sentences with the row's fact in the middle (``multi_sentence.yaml``)."""
    path = directory / "multi_sentence.yaml"
    records = _load(path, _MultiSentenceFile).templates
    _unique(path, "templates", records, "id")
    answers = _known_tables(directory, path, "templates", records)
    for index, record in enumerate(records):
        answer = answers[record.table]
        _slots(path, "templates", index, record, "user", refuse=answer)
        _slots(path, "templates", index, record, "claim", need=answer)
        for field in ("before", "after"):
            for number, sentence in enumerate(getattr(record, field)):
                _slots(path, "templates", index, record, f"{field}[{number}]", refuse=answer, text=sentence)
        if len(record.sentences) > MAX_SENTENCES:
            raise ProbeDataError(
                f"probe data {path}: templates[{index}] (id {record.id!r}): {len(record.sentences)} sentences "
                f"in before + claim + after; an answer has at most {MAX_SENTENCES}. Shorten before or after."
            )
    return records


@cache
def negation_templates(directory: Path = DATA_DIR) -> tuple[NegationTemplate, ...]:
    """Yes / no questions about a candidate answer, affirmed or denied (``negation.yaml``)."""
    path = directory / "negation.yaml"
    records = _load(path, _NegationFile).templates
    _unique(path, "templates", records, "id")
    answers = _known_tables(directory, path, "templates", records)
    for index, record in enumerate(records):
        answer = answers[record.table]
        _slots(path, "templates", index, record, "question", need="claimed", refuse=answer)
        _slots(path, "templates", index, record, "question", refuse="other")
        _slots(path, "templates", index, record, "affirm", refuse=answer)
        _slots(path, "templates", index, record, "deny", need="other", refuse=answer)
    return records


def varied_prompts(directory: Path = DATA_DIR) -> tuple[VariedPrompt, ...]:
    """Honest vs deceptive system prompts in many styles (``varied_instructions.yaml``)."""
    return _varied(directory).prompts


def varied_answers(directory: Path = DATA_DIR) -> tuple[VariedAnswer, ...]:
    """Questions and answers in several registers (``varied_instructions.yaml``)."""
    return _varied(directory).answers


def scenarios(directory: Path = DATA_DIR) -> tuple[Scenario, ...]:
    """Role-play scenarios (``roleplay.yaml``), templates over a :class:`Person`'s fields."""
    return _roleplay(directory).scenarios


def people(directory: Path = DATA_DIR) -> tuple[Person, ...]:
    """The people that fill the role-play scenarios' slots (``roleplay.yaml``)."""
    return _roleplay(directory).people


def code_templates(directory: Path = DATA_DIR) -> tuple[CodeTemplate, ...]:
    """Secure vs insecure code answers to one request (``insecure_code.yaml``)."""
    return _code(directory).templates


def code_entities(directory: Path = DATA_DIR) -> tuple[CodeEntity, ...]:
    """The nouns that fill the code templates' slots (``insecure_code.yaml``)."""
    return _code(directory).entities


def control_templates(directory: Path = DATA_DIR) -> tuple[ControlTemplate, ...]:
    """Benign user / assistant templates for threshold calibration (``controls.yaml``)."""
    return _controls(directory).templates


def control_entities(directory: Path = DATA_DIR) -> ControlEntities:
    """The lists the control rows are drawn from (``controls.yaml``; the rule is code)."""
    return _controls(directory).entities


@cache
def demo(directory: Path = DATA_DIR) -> DemoSet:
    """The demo probe's system prompts and facts (``demo.yaml``)."""
    return _load(directory / "demo.yaml", DemoSet)


def demo_conversations(directory: Path = DATA_DIR) -> list[list[dict[str, str]]]:
    """Every demo fact answered honestly (honest prompt, true answer) and deceptively
    (deceptive prompt, false answer), in file order: the demo probe's examples and chat
    text for SAE training. A new list on every call (callers may change it)."""
    d = demo(directory)
    return [
        conversation(system, fact.question, answer)
        for fact in d.facts
        for system, answer in ((d.honest, fact.true_answer), (d.deceptive, fact.false_answer))
    ]


def conversation(system: str, question: str, answer: str) -> list[dict[str, str]]:
    """A system prompt, a user question and the assistant's answer as chat messages."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


# -- internals -------------------------------------------------------------------------------


@cache
def _fact_table_specs(directory: Path) -> tuple[FactTableSpec, ...]:
    """``fact_tables.yaml`` alone (the templates check their table names against it)."""
    path = directory / "fact_tables.yaml"
    specs = _load(path, _FactTablesFile).tables
    _unique(path, "tables", specs, "name")
    return specs


@cache
def _varied(directory: Path) -> _VariedFile:
    path = directory / "varied_instructions.yaml"
    document = _load(path, _VariedFile)
    _unique(path, "prompts", document.prompts, "id")
    _unique(path, "answers", document.answers, "id")
    for index, prompt in enumerate(document.prompts):
        short, long = sorted((len(prompt.honest), len(prompt.deceptive)))
        if long > PROMPT_LENGTH_RATIO * short:
            raise ProbeDataError(
                f"probe data {path}: prompts[{index}] (id {prompt.id!r}): fields 'honest' and 'deceptive' are "
                f"{len(prompt.honest)} and {len(prompt.deceptive)} characters; the longer may be at most "
                f"{PROMPT_LENGTH_RATIO} times the shorter, so that length does not give the label away."
            )
    answers = _known_tables(directory, path, "answers", document.answers)
    for index, record in enumerate(document.answers):
        _slots(path, "answers", index, record, "question", refuse=answers[record.table])
        _slots(path, "answers", index, record, "answer", need=answers[record.table])
    return document


@cache
def _roleplay(directory: Path) -> _RoleplayFile:
    path = directory / "roleplay.yaml"
    document = _load(path, _RoleplayFile)
    _unique(path, "scenarios", document.scenarios, "id")
    _unique(path, "people", document.people, "name")
    return document


@cache
def _code(directory: Path) -> _CodeFile:
    path = directory / "insecure_code.yaml"
    document = _load(path, _CodeFile)
    _unique(path, "templates", document.templates, "id")
    _unique(path, "entities", document.entities, "noun")
    return document


@cache
def _controls(directory: Path) -> _ControlsFile:
    path = directory / "controls.yaml"
    document = _load(path, _ControlsFile)
    _unique(path, "templates", document.templates, "id")
    return document


def _load(path: Path, schema: type[_T]) -> _T:
    """Read one YAML file and validate it against ``schema`` (a dataclass of sections).

    Every problem becomes a :class:`ProbeDataError` naming the file, the record (section,
    index and id) and the field, with the fields that record type takes."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProbeDataError(
            f"probe data {path}: cannot read it ({exc.strerror}). The file ships with saemon in "
            "monitor/data/: reinstall the package or restore the file."
        ) from None
    except UnicodeDecodeError:
        raise ProbeDataError(f"probe data {path}: not UTF-8 text; save the file as UTF-8.") from None
    try:
        document = yaml.load(text, Loader=_Loader)  # a safe loader (C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProbeDataError(f"probe data {path}: not valid YAML{where} ({problem}). Fix the syntax there.") from None
    sections = [f.name for f in dataclasses.fields(schema)]  # type: ignore[arg-type]
    if not isinstance(document, dict):
        raise ProbeDataError(
            f"probe data {path}: expected a mapping with the sections {', '.join(sections)}, "
            f"found {type(document).__name__}."
        )
    try:
        return TypeAdapter(schema).validate_python(document)
    except ValidationError as exc:
        problems = [_describe(document, schema, error) for error in exc.errors(include_url=False)]
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ProbeDataError(
            f"probe data {path}: {len(problems)} invalid field(s):\n  {shown}\n"
            "Fix those records; the file's header comment says what each field holds."
        ) from None


def _describe(document: dict[str, Any], schema: type, error: Any) -> str:
    """One validation error as "people[3] (name 'Emma'): field 'day' is missing (a Person has ...)"."""
    loc = tuple(error["loc"])
    if not loc:
        return str(error["msg"])
    leaf = loc[-1]
    # an int leaf is a list entry (a record that is not a mapping, a list item of the wrong type)
    record_path = list(loc) if isinstance(leaf, int) else list(loc[:-1])
    record, kind = _walk(document, schema, record_path)
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in record_path).lstrip(".")
    if isinstance(record, dict) and where:
        ident = next((f"{k} {record[k]!r}" for k in _IDS if isinstance(record.get(k), str)), None)
        where += f" ({ident})" if ident else ""
    noun = "field" if record_path else "section"
    got = error.get("input")
    got = f" (got {got!r})" if isinstance(got, str | int | float | bool) or got is None else ""
    if isinstance(leaf, int):
        problem = f"{error['msg']}{got}"
    elif error["type"] == "missing":
        problem = f"{noun} {leaf!r} is missing"
    elif error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        problem = f"unknown {noun} {leaf!r}"
    else:
        problem = f"{noun} {leaf!r}: {error['msg']}{got}"
    expected = ""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        names = ", ".join(f.name for f in dataclasses.fields(kind))
        if record_path:
            expected = f" ({kind.__name__} fields: {names}; all required, no others)"
        else:
            expected = f" (the file's sections: {names}; all required, no others)"
    return f"{where + ': ' if where else ''}{problem}{expected}"


#: The fields that name a record in an error message, first match wins.
_IDS = ("id", "name", "noun", "question", "city", "item")


def _walk(document: Any, schema: Any, path: list[Any]) -> tuple[Any, Any]:
    """The value and the declared type at ``path`` inside ``document``; None where unknown."""
    node, kind = document, schema
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
        try:
            kind = get_args(kind)[0] if isinstance(part, int) else get_type_hints(kind)[part]
        except (KeyError, IndexError, TypeError, NameError):
            kind = None
    return node, kind


def _known_tables(directory: Path, path: Path, section: str, records: tuple[Any, ...]) -> dict[str, str]:
    """Refuse a record whose ``table`` is not in fact_tables.yaml; returns {table: answer column}."""
    answers = {spec.name: spec.answer for spec in _fact_table_specs(directory)}
    for index, record in enumerate(records):
        if record.table not in answers:
            raise ProbeDataError(
                f"probe data {path}: {section}[{index}] (id {record.id!r}): field 'table' is {record.table!r}, "
                f"not a table of fact_tables.yaml ({', '.join(answers)}). Name one of those tables."
            )
    return answers


def _slots(
    path: Path,
    section: str,
    index: int,
    record: Any,
    field: str,
    *,
    need: str | None = None,
    refuse: str | None = None,
    text: str | None = None,
) -> None:
    """Refuse a template string that lacks the slot ``$need`` or uses the slot ``$refuse``
    (the answer column where both versions must read the same, say)."""
    names = set(Template(getattr(record, field) if text is None else text).get_identifiers())
    for slot, present, rule in ((need, False, "must use"), (refuse, True, "must not use")):
        if slot is not None and (slot in names) == present:
            raise ProbeDataError(
                f"probe data {path}: {section}[{index}] (id {record.id!r}): field {field!r} {rule} ${slot} "
                f"(table {record.table!r}); the file's header comment says which slots each field takes."
            )


def _unique(path: Path, section: str, records: tuple[Any, ...], field: str) -> None:
    """Refuse a repeated id: the splits are dealt by id, a repeat would merge two records."""
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        value = getattr(record, field)
        if value in seen:
            raise ProbeDataError(
                f"probe data {path}: {section}[{index}] ({field} {value!r}): field {field!r} repeats "
                f"{section}[{seen[value]}]; each {field} must be unique (the splits are dealt by it). Rename one."
            )
        seen[value] = index


def _read_table(directory: Path, spec: FactTableSpec) -> FactTable:
    """``facts/<name>.csv``: a header with the key and answer columns, then complete rows
    with unique keys."""
    path = directory / FACTS_DIR / f"{spec.name}.csv"
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ProbeDataError(
            f"fact table {path}: cannot read it ({exc.strerror}); fact_tables.yaml names table {spec.name!r}. "
            "Restore the CSV or remove the table's record."
        ) from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            columns = list(reader.fieldnames or ())
            for role, column in (("key", spec.key), ("answer", spec.answer)):
                if column not in columns:
                    raise ProbeDataError(
                        f"fact table {path}: no column {column!r}, which fact_tables.yaml names as the {role} "
                        f"of table {spec.name!r} (the header is {', '.join(columns) or 'empty'}). "
                        "Fix the header or the record in fact_tables.yaml."
                    )
            rows: list[dict[str, str]] = []
            seen: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                if None in row:
                    raise ProbeDataError(
                        f"fact table {path}: line {line}: more cells than the {len(columns)} columns of the "
                        "header. Quote cells that contain commas."
                    )
                empty = next((column for column in columns if not row[column]), None)
                if empty is not None:
                    raise ProbeDataError(
                        f"fact table {path}: line {line} ({spec.key} {row[spec.key]!r}): column {empty!r} is "
                        "empty or missing. Every row needs a value in every column."
                    )
                key = row[spec.key]
                if key in seen:
                    raise ProbeDataError(
                        f"fact table {path}: line {line}: {spec.key} {key!r} repeats line {seen[key]}; "
                        "each row's key must be unique (the splits are dealt by it)."
                    )
                seen[key] = line
                rows.append(dict(row))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ProbeDataError(f"fact table {path}: not a UTF-8 CSV file ({exc}). Save it as UTF-8 CSV.") from None
    if not rows:
        raise ProbeDataError(f"fact table {path}: no rows under the header. Add rows or remove the table's record.")
    return FactTable(spec.name, spec.key, spec.answer, tuple(rows))
