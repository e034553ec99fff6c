"""The issuance journal, signing claims, approvals and certificate lineage.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

- ``issuance_journal``: every signature of a CA key, written before the key is
  used; append-only, enforced by triggers on both backends.
- ``scep_request.state`` gains SIGNING (a signer's claim), and ``approval``
  records what vouched for a validated request.
- ``certificate``: ``der`` may be NULL (a voided serial: claimed, never
  stored, revoked), ``issuer_key_id`` names the signing CA key, ``renews_serial``
  the certificate a challenge-less renewal was bound to.

Requests validated before this revision get an approval from what they
recorded: Intune leaves its result code (``provider_code``), a static
challenge does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_BEFORE = "'RECEIVED', 'VALIDATED', 'REJECTED', 'SIGNED', 'ISSUED', 'FAILED'"
_STATES = "'RECEIVED', 'VALIDATED', 'REJECTED', 'SIGNING', 'SIGNED', 'ISSUED', 'FAILED'"
_APPROVALS = "'challenge', 'provider', 'renewal'"
_KINDS = "'certificate', 'crl', 'ca-certificate', 'ra-certificate'"
_REFUSAL = "issuance_journal is append-only"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "issuance_journal",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("issuer_key_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("tbs_sha256", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_before", _utc(), nullable=False),
        sa.Column("not_after", _utc(), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=True),
        sa.CheckConstraint(f"kind IN ({_KINDS})", name=op.f("ck_issuance_journal_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issuance_journal")),
        sa.UniqueConstraint("kind", "serial", name="uq_issuance_journal_kind_serial"),
    )
    _refuse_changes_to_the_journal()

    with op.batch_alter_table("scep_request") as batch:
        batch.add_column(sa.Column("approval", sa.String(length=16), nullable=True))
        batch.drop_constraint(op.f("ck_scep_request_state"), type_="check")
        batch.create_check_constraint("state", f"state IN ({_STATES})")
        batch.create_check_constraint("approval", f"approval IN ({_APPROVALS})")
    op.execute(
        "UPDATE scep_request SET approval = CASE WHEN provider_code IS NULL "
        "THEN 'challenge' ELSE 'provider' END "
        "WHERE id IN (SELECT request_id FROM request_event "
        "WHERE kind = 'state' AND to_state = 'VALIDATED')"
    )

    with op.batch_alter_table("certificate") as batch:
        batch.alter_column("der", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("issuer_key_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("renews_serial", sa.String(length=64), nullable=True))


def _refuse_changes_to_the_journal() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION issuance_journal_append_only() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER issuance_journal_append_only BEFORE UPDATE OR DELETE "
            "ON issuance_journal FOR EACH ROW EXECUTE FUNCTION issuance_journal_append_only()"
        )
        return
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER issuance_journal_no_{event.lower()} BEFORE {event} "
            f"ON issuance_journal BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
        )


def downgrade() -> None:
    with op.batch_alter_table("certificate") as batch:
        batch.drop_column("renews_serial")
        batch.drop_column("issuer_key_id")
        batch.alter_column("der", existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table("scep_request") as batch:
        batch.drop_constraint(op.f("ck_scep_request_state"), type_="check")
        batch.create_check_constraint("state", f"state IN ({_STATES_BEFORE})")
        batch.drop_constraint(op.f("ck_scep_request_approval"), type_="check")
        batch.drop_column("approval")
    op.drop_table("issuance_journal")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION issuance_journal_append_only()")
