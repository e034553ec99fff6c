"""Park requests whose pipeline message went to a dead-letter queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

A parked request is waiting for an operator (``scepline dlq replay``); the
sweep must not re-queue it behind the operator's back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("scep_request", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scep_request") as batch:
        batch.drop_column("parked_at")
