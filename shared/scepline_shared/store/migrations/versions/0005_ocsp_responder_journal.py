"""The issuance journal records OCSP responder certificates.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

``issuance_journal.kind`` gains ``ocsp-certificate``: the signer issues each CA
generation's delegated OCSP responder certificate with the CA key, journaled
before signing like every other signature of that key.

SQLite cannot change a CHECK constraint in place: the table is copied, which
drops its append-only triggers, so they are created again (the copy itself is
an INSERT into a new table and a DROP of the old one: neither is refused).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS_BEFORE = "'certificate', 'crl', 'ca-certificate', 'ra-certificate'"
_KINDS = _KINDS_BEFORE + ", 'ocsp-certificate'"
_REFUSAL = "issuance_journal is append-only"


def upgrade() -> None:
    _replace_kinds(_KINDS)


def downgrade() -> None:
    # Entries of the new kind cannot be deleted (append-only): downgrading a
    # store that journaled responder certificates fails here, as it should.
    _replace_kinds(_KINDS_BEFORE)


def _replace_kinds(kinds: str) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS issuance_journal_no_{event}")
    with op.batch_alter_table("issuance_journal") as batch:
        batch.drop_constraint(op.f("ck_issuance_journal_kind"), type_="check")
        batch.create_check_constraint("kind", f"kind IN ({kinds})")
    if sqlite:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER issuance_journal_no_{event.lower()} BEFORE {event} "
                f"ON issuance_journal BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )
