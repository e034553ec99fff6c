"""What scepline relies on inside its libraries, beyond their public API.

Each library below is pinned in pyproject.toml below its next feature release
because scepline reaches past its public API; this file states exactly what it
reaches for. (uvicorn is fenced the same way in tests/scepline/test_http_server.py.)

When a test here fails, a library changed under scepline, usually after its
version bound was moved. Do not loosen the test. Read the library's changelog
for the attribute or behaviour the failing test names, then either adapt the
module it names, or drop the shortcut: docs/performance.md, "Library internals",
says what each one buys. Then update this test, and move the bound in
pyproject.toml (`uv lock`) to the release it now passes on.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from asn1crypto import cms, core, parser, x509
from cryptography import x509 as crypto_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.util import greenlet_spawn

from scepline_shared.scep import asn1 as scep_asn1
from scepline_shared.store import RequestState, create_engine_for
from scepline_shared.store._sql import Database, RequestChange, reusable
from scepline_shared.store.models import EnumString, UtcDateTime

# -- SQLAlchemy: hot statements run on asyncpg directly (store/_sql.py) ------

_METADATA = MetaData()
_ITEM = Table(
    "fence_item",
    _METADATA,
    Column("item_id", String(32), primary_key=True),
    Column("state", EnumString(RequestState), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
_NOTE = Table(
    "fence_note",
    _METADATA,
    Column("item_id", String(32), nullable=False),
    Column("detail", String(64), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
)

# The shape of every request change: a compare-and-set returning the row, with
# a constant SQLAlchemy binds itself (`attempts + 1`), one parameter used twice,
# and a dependent row inserted from the changed row.
_CHANGE = RequestChange(
    update(_ITEM)
    .where(
        _ITEM.c.item_id == bindparam("where_item_id"),
        _ITEM.c.state == bindparam("where_from"),
        _ITEM.c.updated_at <= bindparam("set_updated_at"),
    )
    .values(
        state=bindparam("set_to"),
        attempts=_ITEM.c.attempts + 1,
        updated_at=bindparam("set_updated_at"),
    )
    .returning(*_ITEM.c),
    ((_NOTE, {"item_id": _ITEM.c.item_id, "detail": "note_detail", "at": "set_updated_at"}),),
)
# Parameters in the opposite order to their placeholders' first use.
_SELECT = reusable(
    select(
        bindparam("second", type_=String), bindparam("first", type_=Integer), _ITEM.c.updated_at
    ).where(_ITEM.c.item_id == bindparam("first_id"), literal(1) == 1)
)
_T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _asyncpg_database() -> Database:
    """A Database on the asyncpg dialect; nothing connects until a statement runs."""
    return Database(create_engine_for("postgresql://postgres@127.0.0.1:5432/unused"))


def test_sqlalchemy_compiles_positional_parameters_as_the_raw_path_reads_them() -> None:
    database = _asyncpg_database()
    statement = database._compile(_CHANGE)
    compiled = statement.compile(dialect=database.engine.dialect)

    assert compiled.positional
    names = compiled.positiontup
    assert isinstance(names, list) and len(set(names)) == len(names)
    # Each $n is one name of positiontup, in order (a parameter used twice is one
    # $n); that the values land right is checked on PostgreSQL below.
    placeholders = {int(number) for number in re.findall(r"\$(\d+)", str(compiled))}
    assert placeholders == set(range(1, len(names) + 1))
    binds = [compiled.binds[name] for name in names]
    assert all(isinstance(bind, BindParameter) for bind in binds)
    assert sorted(bind.key for bind in binds if bind.required) == [
        "note_detail",
        "set_to",
        "set_updated_at",
        "where_from",
        "where_item_id",
    ]
    assert [bind.effective_value for bind in binds if not bind.required] == [1]
    assert not compiled.post_compile_params
    assert not compiled.literal_execute_params

    raw = database._compile_raw(statement)
    assert raw.sql == str(compiled)
    assert [name for name, _, _ in raw.binds if name is not None] == [
        bind.key for bind in binds if bind.required
    ]
    # The changed row's columns come back through their types' result processors
    # (aware datetimes, StrEnum); a write's RETURNING columns are its exported ones.
    returning = database._compile_raw(_CHANGE.change)
    assert [index for index, _ in returning.results] == [1, 3]
    assert list(_CHANGE.change.exported_columns) == list(_ITEM.c)


def test_a_parameter_sqlalchemy_expands_at_execution_is_refused_by_the_raw_path() -> None:
    database = _asyncpg_database()
    expanding = select(_ITEM.c.item_id).where(
        _ITEM.c.item_id.in_(bindparam("item_ids", expanding=True))
    )
    assert expanding.compile(dialect=database.engine.dialect).post_compile_params
    with pytest.raises(ValueError, match="cannot run on asyncpg directly"):
        database._compile_raw(expanding)


@pytest.fixture
async def fence_engine(postgres_empty_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine_for(postgres_empty_url, pool_size=1, max_overflow=0, pool_timeout=5)
    async with engine.begin() as connection:
        await connection.run_sync(_METADATA.create_all)
        await connection.execute(
            _ITEM.insert(),
            [
                {"item_id": "a", "state": RequestState.RECEIVED, "attempts": 0, "updated_at": _T0},
                {"item_id": "b", "state": RequestState.RECEIVED, "attempts": 0, "updated_at": _T0},
            ],
        )
    yield engine
    await engine.dispose()


@pytest.mark.postgres
async def test_the_raw_path_and_sqlalchemy_give_the_same_rows(fence_engine: AsyncEngine) -> None:
    database = Database(fence_engine)
    parameters = {
        "where_from": RequestState.RECEIVED,
        "set_to": RequestState.VALIDATED,
        "set_updated_at": _T0.replace(hour=13),
        "note_detail": "validated",
    }
    raw = await database.change_request(_CHANGE, {**parameters, "where_item_id": "a"})
    statement = database._compiled[_CHANGE]
    assert statement in database._raw  # the change took the raw path
    async with fence_engine.connect() as connection:
        through_sqlalchemy = (
            await connection.execute(statement, {**parameters, "where_item_id": "b"})
        ).one()
        await connection.commit()
    assert raw is not None
    assert tuple(raw)[1:] == tuple(through_sqlalchemy)[1:]
    assert type(raw[1]) is RequestState and raw[2] == 1
    assert raw[3] == _T0.replace(hour=13) and raw[3].tzinfo is not None

    selected = {"second": "two", "first": 1, "first_id": "a"}
    row = await database.fetch_one(_SELECT, selected)
    assert row is not None
    async with fence_engine.connect() as connection:
        assert tuple(row) == tuple((await connection.execute(_SELECT, selected)).one())
    assert tuple(row) == ("two", 1, _T0.replace(hour=13))
    async with fence_engine.connect() as connection:
        notes = (await connection.execute(select(_NOTE.c.item_id, _NOTE.c.detail))).all()
    assert sorted(tuple(note) for note in notes) == [("a", "validated"), ("b", "validated")]


@pytest.mark.postgres
async def test_a_pooled_connection_checked_out_through_greenlet_spawn_serves_asyncpg_directly(
    fence_engine: AsyncEngine,
) -> None:
    pool = fence_engine.sync_engine.pool
    fairy = await greenlet_spawn(pool.connect)
    driver = fairy.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    assert await driver.fetchval("SELECT count(*) FROM fence_item") == 2
    await greenlet_spawn(fairy.close)

    # Used behind the adapter's back, the connection goes back to the pool as
    # it was: SQLAlchemy hands out the same one and can use it itself.
    again = await greenlet_spawn(pool.connect)
    assert again.driver_connection is driver
    assert not driver.is_in_transaction()
    await greenlet_spawn(again.close)
    async with fence_engine.connect() as connection:
        assert (await connection.execute(select(literal(7)))).scalar_one() == 7


@pytest.mark.postgres
async def test_a_connection_invalidated_outside_a_greenlet_is_dropped_without_waiting(
    fence_engine: AsyncEngine,
) -> None:
    pool = fence_engine.sync_engine.pool
    fairy = await greenlet_spawn(pool.connect)
    driver = fairy.driver_connection
    busy = asyncio.ensure_future(driver.execute("SELECT pg_sleep(5)"))
    await asyncio.sleep(0.2)
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy

    fairy.invalidate()  # what _sql.py does when a statement is cancelled
    assert driver.is_closed()
    await greenlet_spawn(fairy.close)
    fresh = await asyncio.wait_for(greenlet_spawn(pool.connect), 5)
    assert fresh.driver_connection is not driver
    assert await fresh.driver_connection.fetchval("SELECT 1") == 1
    await greenlet_spawn(fresh.close)


# -- asn1crypto: SCEP attributes registered in its OID tables (scep/asn1.py) --


def test_asn1crypto_has_the_oid_tables_scep_asn1_extends() -> None:
    assert isinstance(cms.CMSAttributeType._map, dict)
    assert isinstance(cms.CMSAttribute._oid_specs, dict)
    reverse_map = cms.CMSAttributeType._reverse_map
    assert reverse_map is None or isinstance(reverse_map, dict)
    for oid, name, _ in scep_asn1._SCEP_ATTRIBUTES:
        assert cms.CMSAttributeType._map[oid] == name
        assert issubclass(cms.CMSAttribute._oid_specs[name], core.SetOf)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (scep_asn1.MESSAGE_TYPE, core.PrintableString("19")),
        (scep_asn1.PKI_STATUS, core.PrintableString("0")),
        (scep_asn1.FAIL_INFO, core.PrintableString("2")),
        (scep_asn1.SENDER_NONCE, core.OctetString(os.urandom(16))),
        (scep_asn1.RECIPIENT_NONCE, core.OctetString(os.urandom(16))),
        (scep_asn1.TRANSACTION_ID, core.PrintableString("tx-1")),
        (scep_asn1.FAIL_INFO_TEXT, core.UTF8String("nicht erlaubt")),
    ],
)
def test_each_registered_scep_attribute_resolves_both_ways_and_parses_typed(
    name: str, value: core.Asn1Value
) -> None:
    oid = next(oid for oid, known, _ in scep_asn1._SCEP_ATTRIBUTES if known == name)
    assert cms.CMSAttributeType(name).dotted == oid
    # Encoded by hand from the dotted OID, so reading it owes nothing to our builders.
    encoded = parser.emit(
        0,
        1,
        16,
        core.ObjectIdentifier(oid).dump() + parser.emit(0, 1, 17, value.dump()),
    )
    attribute = cms.CMSAttribute.load(encoded)
    assert attribute["type"].native == name
    parsed = attribute["values"][0]
    assert type(parsed) is type(value)
    assert parsed.native == value.native
    assert scep_asn1.attribute(name, value).dump() == encoded


def test_an_asn1crypto_structure_declared_by_fields_parses() -> None:
    issuer = x509.Name.build({"common_name": "Scepline CA"})
    subject = x509.Name.build({"common_name": "device-1"})
    encoded = scep_asn1.IssuerAndSubject({"issuer": issuer, "subject": subject}).dump()
    loaded = scep_asn1.IssuerAndSubject.load(encoded)
    assert loaded["issuer"] == issuer and loaded["subject"] == subject


# -- cryptography: what the PKCS#11 keys and the profile read (keys/, ca/) ----


def test_cryptography_keeps_the_padding_parameters_pkcs11_keys_read() -> None:
    # keys/pkcs11_keys.py hands these to the token; cryptography has no public
    # accessor for the PSS salt length, the OAEP label, or the MGF1 and
    # Prehashed hashes.
    sha384 = hashes.SHA384()
    assert padding.MGF1(sha384)._algorithm is sha384
    pss = padding.PSS(mgf=padding.MGF1(sha384), salt_length=32)
    assert pss._salt_length == 32
    assert padding.PSS(padding.MGF1(sha384), padding.PSS.MAX_LENGTH)._salt_length is (
        padding.PSS.MAX_LENGTH
    )
    assert padding.PSS(padding.MGF1(sha384), padding.PSS.DIGEST_LENGTH)._salt_length is (
        padding.PSS.DIGEST_LENGTH
    )
    oaep = padding.OAEP(mgf=padding.MGF1(sha384), algorithm=sha384, label=b"label")
    assert oaep._label == b"label"
    assert padding.OAEP(padding.MGF1(sha384), sha384, None)._label is None
    assert Prehashed(sha384)._algorithm is sha384


def test_cryptography_names_an_attribute_oid() -> None:
    # ca/profile.py names the subject attribute it refuses.
    assert crypto_x509.NameOID.COMMON_NAME._name == "commonName"
