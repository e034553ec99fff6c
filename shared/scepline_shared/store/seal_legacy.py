"""At start-up: prove the store key, then seal CSRs stored before sealing existed.

Every process runs `seal_legacy_csrs` after the migrations. When nothing is
left to seal it costs two indexed single-row reads:

- The newest request's CSR must open with this process's key. A process given
  another key (a lost key file, one not shared between processes) would
  otherwise seal new requests that no other process can read: it refuses to
  start instead.
- Rows are sealed newest first, so the unsealed rows are always the oldest
  ones (new requests are sealed when recorded; an interrupted pass stops
  part-way down): if the oldest row is sealed, every row is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from scepline_shared.store._convert import REQUEST_TABLE
from scepline_shared.store.database import autocommit_engine
from scepline_shared.store.errors import StoreKeyError, UnreadableCsr
from scepline_shared.store.store_key import CsrSealer, is_sealed

__all__ = ["seal_legacy_csrs"]

_REQ = REQUEST_TABLE.c
_SEAL = (
    update(REQUEST_TABLE)
    # Only if no one changed it meanwhile (another process running this pass).
    .where(_REQ.id == bindparam("row_id"), _REQ.csr_der == bindparam("plain"))
    .values(csr_der=bindparam("sealed"))
)


async def seal_legacy_csrs(engine: AsyncEngine, sealer: CsrSealer, *, batch: int = 500) -> int:
    """Seal every plaintext CSR in the store; how many were sealed.

    Raises StoreKeyError if `sealer` does not open the stored CSRs. Safe to run
    in several processes at once.
    """
    newest = await _edge_row(engine, newest=True)
    if newest is not None:
        try:
            sealer.open(newest.csr_der, newest.transaction_id)
        except UnreadableCsr:
            raise StoreKeyError(
                "this store key is not the key the stored CSRs were sealed with (the newest, "
                f"of request {newest.transaction_id!r}, does not open): give every process "
                "the same key file, restored from the backup taken with the database"
            ) from None
    oldest = await _edge_row(engine, newest=False)
    if oldest is None or is_sealed(oldest.csr_der):
        return 0
    count = 0
    below: int | None = None
    while True:
        query = select(_REQ.id, _REQ.transaction_id, _REQ.csr_der).order_by(_REQ.id.desc())
        if below is not None:
            query = query.where(_REQ.id < below)
        async with autocommit_engine(engine).connect() as connection:
            rows = (await connection.execute(query.limit(batch))).all()
        if not rows:
            return count
        plain = [
            {"row_id": id_, "plain": csr, "sealed": sealer.seal(csr, transaction_id)}
            for id_, transaction_id, csr in rows
            if not is_sealed(csr)
        ]
        if plain:
            async with engine.begin() as connection:
                await connection.execute(_SEAL, plain)
            count += len(plain)
        below = rows[-1].id


async def _edge_row(engine: AsyncEngine, *, newest: bool) -> Row[Any] | None:
    """The newest (or oldest) request's transaction id and stored CSR."""
    order = _REQ.id.desc() if newest else _REQ.id
    async with autocommit_engine(engine).connect() as connection:
        result = await connection.execute(
            select(_REQ.transaction_id, _REQ.csr_der).order_by(order).limit(1)
        )
        return result.first()
