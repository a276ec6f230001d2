"""The decision log: destinations, the line format, and failed writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway.audit import DecisionLog, DecisionRecord
from gateway.outcome import Attempt, Candidate

FIELDS = {
    "decision_id",
    "time",
    "rpc",
    "trace_id",
    "tenant",
    "classification",
    "declared_classification",
    "detectors",
    "task_type",
    "complexity",
    "policy_name",
    "policy_revision",
    "rule",
    "candidates",
    "model",
    "attempts",
    "enforcement",
    "cost_usd",
    "cost_estimated",
    "latency_ms",
    "status",
    "reason",
    "labels",
    "policy_inputs",
    "route",
    "usage",
    "shadow",
    "version",
}
# Only on a redacted request's line: the others keep their shape.
REDACTION_FIELDS = {"redacted", "unrestored"}


def record(**fields: object) -> DecisionRecord:
    base = DecisionRecord(decision_id="d1", time="2026-01-01T00:00:00.000+00:00", rpc="Chat")
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def test_the_line_names_every_field_of_the_record() -> None:
    assert {f.name for f in dataclasses.fields(DecisionRecord)} == FIELDS | REDACTION_FIELDS
    assert set(json.loads(record().to_json())) == FIELDS


def test_a_redacted_request_names_detectors_and_counts_never_values() -> None:
    line = json.loads(record(redacted=(("pii.email", 2), ("pii.phone", 1)), unrestored=1).to_json())
    assert set(line) == FIELDS | REDACTION_FIELDS
    assert line["redacted"] == {"pii.email": 2, "pii.phone": 1}
    assert line["unrestored"] == 1


def test_off_means_no_log() -> None:
    assert DecisionLog.open("off") is None


def test_stdout_gets_one_json_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    log = DecisionLog.open("stdout")
    assert log is not None
    log.write(record(tenant="acme"))
    log.write(record(decision_id="d2"))
    log.close()
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["decision_id"] for line in lines] == ["d1", "d2"]


def test_file_is_relative_to_the_config_and_appended(tmp_path: Path) -> None:
    for decision_id in ("a", "b"):
        log = DecisionLog.open("var/decisions.jsonl", tmp_path)
        assert log is not None
        log.write(record(decision_id=decision_id))
        log.close()
    lines = (tmp_path / "var" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["decision_id"] for line in lines] == ["a", "b"]


def test_line_holds_every_field_with_nested_candidates_and_attempts(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog.open(str(path))
    assert log is not None
    log.write(
        record(
            tenant="acme",
            classification="CONFIDENTIAL",
            detectors=("pii.email",),
            candidates=(Candidate("local", True), Candidate("cloud", False, "not cleared")),
            attempts=(
                Attempt("local", "timeout", duration_s=0.0015),
                Attempt("b", None, duration_s=0.002),
                Attempt("c", "budget"),
            ),
            model="b",
            cost_usd=0.25,
            status="OK",
        )
    )
    log.close()
    (line,) = path.read_text().splitlines()
    value = json.loads(line)
    assert set(value) == FIELDS
    assert value["candidates"][1] == {"model": "cloud", "allowed": False, "reason": "not cleared"}
    assert value["attempts"][0] == {"model": "local", "error": "timeout", "duration_ms": 1.5}
    assert value["attempts"][1]["duration_ms"] == 2.0
    assert value["attempts"][2] == {"model": "c", "error": "budget", "duration_ms": 0.0}
    assert value["detectors"] == ["pii.email"] and value["cost_usd"] == 0.25


def test_failed_write_is_counted_and_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog.open(str(tmp_path / "d.jsonl"))
    assert log is not None
    failures: list[int] = []
    log.on_error = lambda: failures.append(1)
    log.close()  # the stream is gone: every write now fails
    log.write(record())
    log.write(record())
    assert len(failures) == 2
    assert caplog.text.count("decision log write failed") == 1
