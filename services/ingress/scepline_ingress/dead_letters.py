"""Which dead letters still need an operator.

A step dead-letters a message and then parks its request in the store, so that
the sweep leaves it to the operator. When parking fails (the store was down,
the process died in between, or RabbitMQ parked a message on its own after too
many redeliveries), the sweep re-queues the request and it may well finish,
leaving its letter behind. A letter is *resolved* when its request is final and
not parked, or no longer exists (pruned): nothing is left to do for it. A final
request that is parked is not resolved: its notification is still owed.

The broker knows the letters and the store knows the requests; this module
joins them (the broker never imports the store).
"""

from __future__ import annotations

from collections.abc import Sequence

from scepline_shared.messages import DeadLetter

from .ports import IngressStore

__all__ = ["resolved_letters"]


async def resolved_letters(repository: IngressStore, letters: Sequence[DeadLetter]) -> set[str]:
    """The ids of the resolved ones among ``letters``, in one store query. An
    unreadable letter is never resolved: an operator must look at it."""
    transactions = {
        letter.id: letter.message.transaction_id for letter in letters if letter.message is not None
    }
    unfinished = await repository.unfinished(set(transactions.values()))
    return {letter for letter, transaction in transactions.items() if transaction not in unfinished}
