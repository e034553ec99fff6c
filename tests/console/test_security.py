"""Tokens, sessions, CSRF, the wrong-token limit and the secure headers: the
admin app over a real store (SQLite), in-process; the token commands as
their own processes."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from scepline.admin_api import tokens
from scepline.connections import runtime
from scepline.runtime import admin_app
from scepline_shared.settings import Settings
from scepline_shared.store.models import AdminRole
from tests.support.commands import run_scepline

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def store_env(tmp_path: Path) -> dict[str, str]:
    env = {"SCEPLINE_DATA_DIR": str(tmp_path / "var")}
    assert run_scepline(env, "db", "upgrade").returncode == 0
    return env


def test_token_create_prints_the_token_last_and_keeps_only_its_hash(store_env: dict[str, str]):
    done = run_scepline(store_env, "admin", "token", "create", "--role", "Operator")

    assert done.returncode == 0, done.stderr
    token = done.stdout.splitlines()[-1]
    assert re.fullmatch(r"sctok_1_[A-Za-z0-9_-]{43}", token)
    assert "role operator" in done.stdout
    secret = token.split("_", 2)[2]
    database = Path(store_env["SCEPLINE_DATA_DIR"]) / "scepline.db"
    with sqlite3.connect(database) as connection:
        [(stored,)] = connection.execute("SELECT secret_sha256 FROM admin_token").fetchall()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    for path in database.parent.glob("scepline.db*"):
        assert secret.encode() not in path.read_bytes()  # nor in the WAL


def test_token_list_and_revoke(store_env: dict[str, str]):
    for role in ("viewer", "operator"):
        assert run_scepline(store_env, "admin", "token", "create", "--role", role).returncode == 0

    revoked = run_scepline(store_env, "admin", "token", "revoke", "2")
    again = run_scepline(store_env, "admin", "token", "revoke", "2")
    listed = run_scepline(store_env, "admin", "token", "list")
    unknown = run_scepline(store_env, "admin", "token", "revoke", "9")
    bad_role = run_scepline(store_env, "admin", "token", "create", "--role", "root")

    assert revoked.returncode == 0 and "revoked at" in revoked.stdout
    assert "revoked already" in again.stdout
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["1", "viewer", "active"]
    assert lines[1].split()[:3] == ["2", "operator", "revoked"]
    assert lines[-1] == "2 token(s)"
    assert "sctok_" not in listed.stdout
    assert unknown.returncode == 1 and "no token with id 9" in unknown.stderr
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr


# -- the app in-process --------------------------------------------------------------------


class Admin:
    def __init__(self, client: httpx.AsyncClient, viewer: str, operator: str) -> None:
        self.client = client
        self.viewer = viewer
        self.operator = operator

    async def login(self, token: str) -> None:
        form = await self.client.get("/login")
        [csrf] = CSRF.findall(form.text)
        answer = await self.client.post("/login", data={"csrf": csrf, "token": token, "next": "/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    settings = Settings(
        data_dir=tmp_path / "var",
        admin_auth_failures_allowed=3,
        admin_auth_failure_window_seconds=300,
    )
    async with runtime(settings, with_broker=False, patience=0) as rt:
        viewer = await tokens.create_token(
            rt.admin, name="viewer", role=AdminRole.VIEWER, valid_for=timedelta(days=1)
        )
        operator = await tokens.create_token(
            rt.admin, name="operator", role=AdminRole.OPERATOR, valid_for=None
        )
        transport = httpx.ASGITransport(app=admin_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            yield Admin(client, viewer.token, operator.token)


async def test_wrong_tokens_from_one_address_are_refused_for_a_while(admin: Admin):
    wrong = {"authorization": "Bearer sctok_1_" + "x" * 43}
    answers = [(await admin.client.get("/api/v1/whoami", headers=wrong)) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]

    blocked = await admin.client.get("/api/v1/whoami", headers=wrong)
    even_right = await admin.client.get(
        "/api/v1/whoami", headers={"authorization": f"Bearer {admin.operator}"}
    )
    form = await admin.client.get("/login")
    login = await admin.client.post(
        "/login", data={"csrf": CSRF.findall(form.text)[0], "token": admin.operator}
    )

    assert blocked.status_code == 429 and blocked.json()["error"] == "too_many_failures"
    assert 200 < int(blocked.headers["retry-after"]) <= 301
    assert even_right.status_code == 429
    assert login.status_code == 429 and "too many wrong tokens" in login.text


async def test_no_token_is_not_counted_as_a_wrong_one(admin: Admin):
    for _ in range(5):
        assert (await admin.client.get("/api/v1/health")).status_code == 401
    ok = await admin.client.get(
        "/api/v1/whoami", headers={"authorization": f"Bearer {admin.viewer}"}
    )
    assert ok.status_code == 200


async def test_the_console_asks_for_a_login_with_one_password_field(admin: Admin):
    home = await admin.client.get("/")
    form = await admin.client.get(home.headers["location"])

    assert home.status_code == 303 and home.headers["location"] == "/login?next=%2F"
    assert len(re.findall(r'type="password"', form.text)) == 1
    assert "HttpOnly" in form.headers["set-cookie"]


async def test_a_login_opens_a_session_cookie_and_a_wrong_token_does_not(admin: Admin):
    form = await admin.client.get("/login")
    [csrf] = CSRF.findall(form.text)

    wrong = await admin.client.post("/login", data={"csrf": csrf, "token": "sctok_9_nope"})
    right = await admin.client.post(
        "/login", data={"csrf": csrf, "token": admin.viewer, "next": "https://evil.example/"}
    )

    assert wrong.status_code == 303 and "failed=1" in wrong.headers["location"]
    assert right.status_code == 303 and right.headers["location"] == "/"  # never elsewhere
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("scepline_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    dashboard = await admin.client.get("/")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text


async def test_the_session_cookie_is_secure_behind_https(admin: Admin):
    proxied = await admin.client.get("/login", headers={"x-forwarded-proto": "https"})
    form = await admin.client.get("https://admin/login")
    answer = await admin.client.post(
        "https://admin/login", data={"csrf": CSRF.findall(form.text)[0], "token": admin.viewer}
    )

    assert "Secure" in proxied.headers["set-cookie"]
    assert answer.status_code == 303
    assert answer.headers["set-cookie"].startswith("scepline_session=")
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_login_without_its_csrf_token_is_refused(admin: Admin):
    await admin.client.get("/login")

    answer = await admin.client.post("/login", data={"token": admin.viewer})

    assert answer.status_code == 403 and "CSRF" in answer.text
    assert "scepline_session" not in answer.headers.get("set-cookie", "")


async def test_every_form_post_needs_the_session_s_csrf_token(admin: Admin):
    await admin.login(admin.operator)
    page = await admin.client.get("/")
    [csrf] = CSRF.findall(page.text)

    without = await admin.client.post("/logout", data={})
    forged = await admin.client.post("/logout", data={"csrf": csrf[::-1]})
    revoke = await admin.client.post("/certificates/1f/revoke", data={"reason": "superseded"})
    with_it = await admin.client.post("/logout", data={"csrf": csrf})

    assert without.status_code == 403 and "CSRF token is missing or wrong" in without.text
    assert forged.status_code == 403
    assert revoke.status_code == 403
    assert with_it.status_code == 303 and with_it.headers["location"] == "/login"


async def test_a_viewer_cannot_act_in_the_console(admin: Admin):
    await admin.login(admin.viewer)
    [csrf] = CSRF.findall((await admin.client.get("/")).text)

    answer = await admin.client.post(
        "/dead-letters/tx-1/purge", data={"csrf": csrf}, follow_redirects=False
    )

    assert answer.status_code == 403 and "needs an operator token" in answer.text


async def test_a_revoked_token_ends_its_sessions(admin: Admin, tmp_path: Path):
    await admin.login(admin.operator)
    assert (await admin.client.get("/")).status_code == 200
    token_id = admin.operator.split("_")[1]

    done = run_scepline(
        {"SCEPLINE_DATA_DIR": str(tmp_path / "var")}, "admin", "token", "revoke", token_id
    )

    assert done.returncode == 0, done.stderr
    after = await admin.client.get("/")
    assert after.status_code == 303 and after.headers["location"].startswith("/login")


@pytest.mark.parametrize("path", ["/", "/login", "/api/v1/health", "/static/console.css", "/nope"])
async def test_every_answer_carries_the_secure_headers(admin: Admin, path: str):
    answer = await admin.client.get(path)

    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


async def test_the_console_s_pages_have_no_inline_script_or_style(admin: Admin):
    await admin.login(admin.viewer)
    for path in ("/", "/requests", "/dead-letters", "/certificates?q=x", "/cas", "/health"):
        page = await admin.client.get(path)
        assert page.status_code == 200, path
        assert "<script>" not in page.text and "<style" not in page.text, path
        assert 'style="' not in page.text and "onclick" not in page.text, path
