"""Which dead letters need nobody: their request is final and not parked, or
gone. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scepline_ingress.dead_letters import resolved_letters
from scepline_shared.messages import DeadLetter, StepMessage
from scepline_shared.pipeline import Step
from scepline_shared.store import RequestRepository, RequestState
from tests.shared.store.helpers import record, validated


def letter(transaction_id: str | None, step: Step = Step.VALIDATE) -> DeadLetter:
    """A dead letter of ``transaction_id`` (None: an unreadable body)."""
    message = None
    if transaction_id is not None:
        message = StepMessage(transaction_id=transaction_id, step=step)
    return DeadLetter(
        id=f"letter-{transaction_id}",
        step=step,
        message=message,
        raw=message.to_bytes() if message else b"\xff not json",
        reason="gave up after 6 attempts",
        dead_at=datetime.now(UTC),
    )


async def finished(repository: RequestRepository, transaction_id: str, state: RequestState) -> None:
    if state is RequestState.REJECTED:
        await record(repository, transaction_id)
        moved = await repository.transition(
            transaction_id=transaction_id,
            from_state=RequestState.RECEIVED,
            to_state=state,
            detail="challenge wrong",
        )
    else:
        await validated(repository, transaction_id)
        moved = await repository.transition(
            transaction_id=transaction_id,
            from_state=RequestState.VALIDATED,
            to_state=RequestState.FAILED,
            detail="profile refused",
        )
    assert moved is not None and moved.state is state


async def test_a_letter_is_resolved_once_its_request_is_final_and_not_parked_or_gone(
    repository: RequestRepository,
) -> None:
    await finished(repository, "rejected", RequestState.REJECTED)
    await finished(repository, "failed", RequestState.FAILED)
    await record(repository, "pruned")
    await repository.transition(
        transaction_id="pruned",
        from_state=RequestState.RECEIVED,
        to_state=RequestState.REJECTED,
        detail="challenge wrong",
    )
    assert await repository.prune(untouched_since=datetime.now(UTC) + timedelta(days=1)) >= 1
    # Still to do: one parked for an operator, one the sweep has again, one
    # final but parked (the notify step's letter: a notification is owed).
    await record(repository, "parked")
    await repository.park(transaction_id="parked", reason="validate: Intune down")
    await validated(repository, "in-progress")
    await finished(repository, "final-but-parked", RequestState.FAILED)
    await repository.park(transaction_id="final-but-parked", reason="notify: Intune down")

    letters = [
        letter("rejected"),
        letter("failed", Step.SIGN),
        letter("pruned"),
        letter("parked"),
        letter("in-progress"),
        letter("final-but-parked", Step.NOTIFY),
        letter(None),
    ]

    assert await resolved_letters(repository, letters) == {
        "letter-rejected",
        "letter-failed",
        "letter-pruned",
    }
