"""Initial schema: requests, their history, certificates and CRLs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written out with plain SQLAlchemy types (not the model's decorators) so this
revision keeps meaning the same thing whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scep_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("signer_key_id", sa.String(length=64), nullable=False),
        sa.Column("message_type", sa.Integer(), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("signer_cert_der", sa.LargeBinary(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("renewal_of_serial", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("notify_state", sa.String(length=16), server_default="NONE", nullable=False),
        sa.Column("fail_info", sa.Integer(), nullable=True),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.Column("provider_code", sa.String(length=128), nullable=True),
        sa.Column("cert_serial", sa.String(length=64), nullable=True),
        sa.Column("cert_der", sa.LargeBinary(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("queued_at", _utc(), nullable=True),
        sa.CheckConstraint(
            "state IN ('RECEIVED', 'VALIDATED', 'REJECTED', 'SIGNED', 'ISSUED', 'FAILED')",
            name=op.f("ck_scep_request_state"),
        ),
        sa.CheckConstraint(
            "notify_state IN ('NONE', 'SENT', 'DEAD', 'NOT_REQUIRED')",
            name=op.f("ck_scep_request_notify_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scep_request")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_scep_request_transaction_id")),
    )
    op.create_index("ix_scep_request_state_queued_at", "scep_request", ["state", "queued_at"])

    op.create_table(
        "request_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="state", nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["scep_request.id"],
            name=op.f("fk_request_event_request_id_scep_request"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_event")),
    )
    op.create_index(op.f("ix_request_event_request_id"), "request_event", ["request_id"])

    op.create_table(
        "certificate",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_before", _utc(), nullable=False),
        sa.Column("not_after", _utc(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("revoked_at", _utc(), nullable=True),
        sa.Column("revocation_reason", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_certificate")),
    )
    op.create_index(op.f("ix_certificate_transaction_id"), "certificate", ["transaction_id"])
    op.create_index("ix_certificate_issuer_revoked_at", "certificate", ["issuer", "revoked_at"])

    op.create_table(
        "crl",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("issuer_key_id", sa.String(length=64), nullable=False),
        sa.Column("this_update", _utc(), nullable=False),
        sa.Column("next_update", _utc(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_crl")),
    )
    op.create_index("ix_crl_issuer_key_id_number", "crl", ["issuer_key_id", "number"])


def downgrade() -> None:
    op.drop_table("crl")
    op.drop_table("certificate")
    op.drop_table("request_event")
    op.drop_table("scep_request")
