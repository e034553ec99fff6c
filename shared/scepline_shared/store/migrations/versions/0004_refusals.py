"""Requests refused before they were recorded, kept in a bounded ring.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

``scepline request show`` finds a transaction id the logs name even when
ingress refused its message before recording a request (a refused cipher, a
bad signature, a stale signingTime).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refusal",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("message_type", sa.Integer(), nullable=True),
        sa.Column("fail_info", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refusal")),
    )
    op.create_index("ix_refusal_transaction_id", "refusal", ["transaction_id"])


def downgrade() -> None:
    op.drop_index("ix_refusal_transaction_id", table_name="refusal")
    op.drop_table("refusal")
