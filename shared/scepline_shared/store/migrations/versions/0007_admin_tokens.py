"""The operator console and management API (issue #16).

Revision ID: 0007_admin_tokens
Revises: 0006_endpoints
Create Date: 2026-12-08

- ``admin_token``: API tokens (``scepline admin token create``), their secret
  kept as a SHA-256 only, a role, an expiry, revocation and last use;
- ``admin_action``: who did what with a token (or the command line): a
  revocation is found by its serial, a replay or purge by its transaction;
- ``intune_status``: each process's latest Intune call and failure, for the
  console's health page (the processes talking to Intune are not the one
  serving the console);
- an index on ``scep_request (state, updated_at)``: a state's most recently
  changed requests (``request list``, the console) and the dashboard's counts
  per hour read a range of it instead of the table.

Self-contained: it depends on nothing but 0005.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_admin_tokens"
down_revision: str | Sequence[str] | None = "0006_endpoints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_token",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator')", name=op.f("ck_admin_token_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_token")),
    )
    op.create_table(
        "admin_action",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_action")),
    )
    op.create_index("ix_admin_action_target", "admin_action", ["target_kind", "target"])
    op.create_table(
        "intune_status",
        sa.Column("reporter", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_call_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_call", sa.String(length=64), nullable=True),
        sa.Column("last_outcome", sa.String(length=32), nullable=True),
        sa.Column("last_latency_ms", sa.Integer(), nullable=True),
        sa.Column("latency_ms_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("reporter", name=op.f("pk_intune_status")),
    )
    op.create_index("ix_scep_request_state_updated_at", "scep_request", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_scep_request_state_updated_at", table_name="scep_request")
    op.drop_table("intune_status")
    op.drop_index("ix_admin_action_target", table_name="admin_action")
    op.drop_table("admin_action")
    op.drop_table("admin_token")
