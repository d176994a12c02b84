"""The one decision of a message's fate from a failure: retry later or dead letter, and with what context."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import ChannelRejected, ChannelUnavailable, KordiamRejected, KordiamUnavailable
from bridge.pipeline.fate import is_transient, outcome_for, poisoned
from bridge.pipeline.notification import PoisonMessage
from bridge.queue.outcome import DeadLetter, Retry


@dataclass(frozen=True)
class Failed:
    stage: str
    error: BaseException


def test_a_permanent_error_is_dead_lettered_with_its_stage_reason_and_class() -> None:
    outcome = outcome_for([Failed("fetch", KordiamRejected("GET /elements/5: 400", status=400))], element_id=5)
    assert outcome == DeadLetter(
        stage="fetch",
        reason="fetch: KordiamRejected: GET /elements/5: 400",
        error_class="KordiamRejected",
        element_id=5,
    )


def test_a_transient_error_is_retried_no_sooner_than_its_hint() -> None:
    outcome = outcome_for([Failed("web", ChannelUnavailable("throttled", retry_after=30))], element_id=5)
    assert outcome == Retry(
        delay=30,
        stage="web",
        reason="web: ChannelUnavailable: throttled",
        error_class="ChannelUnavailable",
        element_id=5,
    )


def test_an_unclassified_error_is_retried_not_dropped() -> None:
    assert is_transient(KeyError("surprise"))
    outcome = outcome_for([Failed("web", KeyError("surprise"))], element_id=5)
    assert isinstance(outcome, Retry) and outcome.delay is None and outcome.error_class == "KeyError"


def test_any_transient_stage_makes_the_whole_message_retried_with_the_longest_hint() -> None:
    failures = [
        Failed("web", ChannelRejected("refused")),
        Failed("print", ChannelUnavailable("down", retry_after=120)),
        Failed("feedback", KordiamUnavailable("slow", retry_after=30)),
    ]
    outcome = outcome_for(failures, element_id=5)
    assert isinstance(outcome, Retry)
    assert (outcome.stage, outcome.delay, outcome.error_class) == ("web,print,feedback", 120, "ChannelRejected")
    assert outcome.reason == (
        "web: ChannelRejected: refused; print: ChannelUnavailable: down; feedback: KordiamUnavailable: slow"
    )


def test_every_stage_permanent_is_a_dead_letter() -> None:
    failures = [Failed("web", ChannelRejected("a")), Failed("print", ChannelRejected("b"))]
    assert isinstance(outcome_for(failures, element_id=5), DeadLetter)


def test_the_reason_is_cut_to_what_the_dead_letter_context_carries() -> None:
    outcome = outcome_for([Failed("web", ChannelRejected("x" * 2000))], element_id=5)
    assert len(outcome.reason) == 900 and outcome.reason.startswith("web: ChannelRejected: xxx")


def test_a_poison_body_is_dead_lettered_at_decode() -> None:
    outcome = poisoned(PoisonMessage("not JSON"))
    assert outcome == DeadLetter(stage="decode", reason="not JSON", error_class="PoisonMessage")


def test_the_reason_is_one_line_whatever_the_error_says() -> None:
    # An error nobody classified may say several lines (pydantic's ValidationError does): before, they went into the
    # dead letter's reason and `dlq list` as they were.
    error = ValueError("2 validation errors for Options\nurl\n  Field required\r\n\ttimeout\n  Input should be > 0")
    outcome = outcome_for([Failed("web", error)], element_id=5)
    assert outcome.reason == (
        "web: ValueError: 2 validation errors for Options url Field required timeout Input should be > 0"
    )
