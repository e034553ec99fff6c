"""SCEP endpoints: the endpoint of each request and certificate, requests
awaiting an operator's approval, one-time challenges.

Revision ID: 0006_endpoints
Revises: 0005
Create Date: 2026-12-08

- ``scep_request.endpoint`` and ``certificate.endpoint``: where a request
  arrived and a certificate was issued (``default`` for everything before).
- ``scep_request.state`` gains AWAITING_APPROVAL (17 characters: the state
  columns, and the history's, widen from 16 to 24) and ``approval`` gains
  ``operator``.
- ``one_time_challenge``: challenges that work once, kept as their SHA-256.

Self-contained (it only adds), so it can be chained after any other revision
that also follows 0005.

SQLite cannot change a column type or a CHECK constraint in place: the table is
copied. ``request_event`` references ``scep_request`` with ON DELETE CASCADE,
and the migration runs with foreign keys on, inside a transaction (where they
cannot be turned off): dropping the old ``scep_request`` would delete every
history row. So ``request_event`` is copied first without its foreign key,
``scep_request`` is copied, and ``request_event`` gets its foreign key back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_endpoints"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_BEFORE = "'RECEIVED', 'VALIDATED', 'REJECTED', 'SIGNING', 'SIGNED', 'ISSUED', 'FAILED'"
_STATES = (
    "'RECEIVED', 'AWAITING_APPROVAL', 'VALIDATED', 'REJECTED', 'SIGNING', 'SIGNED', "
    "'ISSUED', 'FAILED'"
)
_APPROVALS_BEFORE = "'challenge', 'provider', 'renewal'"
_APPROVALS = "'challenge', 'provider', 'renewal', 'operator'"
_FK = "fk_request_event_request_id_scep_request"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    _history_unlinked(True)
    with op.batch_alter_table("request_event") as batch:
        for column in ("from_state", "to_state"):
            batch.alter_column(
                column,
                existing_type=sa.String(length=16),
                type_=sa.String(length=24),
                existing_nullable=column == "from_state",
            )
    with op.batch_alter_table("scep_request") as batch:
        batch.add_column(
            sa.Column("endpoint", sa.String(length=64), server_default="default", nullable=False)
        )
        batch.alter_column(
            "state",
            existing_type=sa.String(length=16),
            type_=sa.String(length=24),
            existing_nullable=False,
        )
        batch.drop_constraint(op.f("ck_scep_request_state"), type_="check")
        batch.create_check_constraint("state", f"state IN ({_STATES})")
        batch.drop_constraint(op.f("ck_scep_request_approval"), type_="check")
        batch.create_check_constraint("approval", f"approval IN ({_APPROVALS})")
    _history_unlinked(False)
    op.add_column(
        "certificate",
        sa.Column("endpoint", sa.String(length=64), server_default="default", nullable=False),
    )
    op.create_table(
        "one_time_challenge",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("challenge_sha256", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("bound_subject", sa.Text(), nullable=True),
        sa.Column("bound_sans", sa.Text(), nullable=True),
        sa.Column("used_at", _utc(), nullable=True),
        sa.Column("used_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_challenge")),
        sa.UniqueConstraint(
            "challenge_sha256", name=op.f("uq_one_time_challenge_challenge_sha256")
        ),
    )
    op.create_index(
        op.f("ix_one_time_challenge_endpoint"), "one_time_challenge", ["endpoint"], unique=False
    )


def downgrade() -> None:
    # Refused (by the CHECK constraints) while a request awaits approval or was
    # approved by an operator: decide or prune them first.
    op.drop_index(op.f("ix_one_time_challenge_endpoint"), table_name="one_time_challenge")
    op.drop_table("one_time_challenge")
    with op.batch_alter_table("certificate") as batch:
        batch.drop_column("endpoint")
    _history_unlinked(True)
    with op.batch_alter_table("scep_request") as batch:
        batch.drop_constraint(op.f("ck_scep_request_approval"), type_="check")
        batch.create_check_constraint("approval", f"approval IN ({_APPROVALS_BEFORE})")
        batch.drop_constraint(op.f("ck_scep_request_state"), type_="check")
        batch.create_check_constraint("state", f"state IN ({_STATES_BEFORE})")
        batch.alter_column(
            "state",
            existing_type=sa.String(length=24),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
        batch.drop_column("endpoint")
    with op.batch_alter_table("request_event") as batch:
        for column in ("from_state", "to_state"):
            batch.alter_column(
                column,
                existing_type=sa.String(length=24),
                type_=sa.String(length=16),
                existing_nullable=column == "from_state",
            )
    _history_unlinked(False)


def _history_unlinked(unlinked: bool) -> None:
    """Take ``request_event``'s foreign key off while ``scep_request`` is copied
    (SQLite), and put it back after. PostgreSQL alters tables in place: nothing
    to do."""
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("request_event") as batch:
        if unlinked:
            batch.drop_constraint(op.f(_FK), type_="foreignkey")
        else:
            batch.create_foreign_key(
                op.f(_FK), "scep_request", ["request_id"], ["id"], ondelete="CASCADE"
            )
