"""The management API on both deployments (``scepline up``'s admin port, and
``scepline admin-api`` beside the pipeline on RabbitMQ + PostgreSQL): every
route, the tokens and roles, and bad input answered as documented JSON errors,
never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cryptography import x509

from scepline_devtools.intune_sim import Route
from scepline_shared.scep import PkiStatus
from tests.console.conftest import Deployment

# Every route, with ids that name nothing: the answer to no token does not
# depend on them.
ROUTES = [
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/requests"),
    ("GET", "/api/v1/requests/tx-nothing"),
    ("GET", "/api/v1/certificates?q=device"),
    ("GET", "/api/v1/certificates/1f"),
    ("GET", "/api/v1/certificates/1f/pem"),
    ("POST", "/api/v1/certificates/1f/revoke"),
    ("GET", "/api/v1/dead-letters"),
    ("GET", "/api/v1/dead-letters/nothing"),
    ("POST", "/api/v1/dead-letters/nothing/replay"),
    ("POST", "/api/v1/dead-letters/nothing/purge"),
    ("GET", "/api/v1/cas"),
    ("GET", "/api/v1/cas/0/crl"),
    ("GET", "/api/v1/cas/0/certificate"),
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/dashboard"),
    ("GET", "/api/v1/actions"),
]
OPERATOR_ROUTES = [(method, path) for method, path in ROUTES if method == "POST"]


def error_of(answer: httpx.Response, status: int, code: str) -> str:
    """The documented JSON error: ``{"error": code, "detail": text}``."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return str(body["detail"])


# -- tokens and roles -------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_request_without_a_token(
    console_deployment: Deployment, method: str, path: str
):
    with console_deployment.api(role=None) as api:
        answer = api.request(method, path)

    error_of(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer nonsense",
        "Bearer sctok_999999_" + "A" * 43,  # well formed, no such token
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ],
)
def test_a_wrong_token_is_refused(console_deployment: Deployment, authorization: str):
    with httpx.Client(base_url=console_deployment.admin_url) as api:
        answer = api.get("/api/v1/requests", headers={"authorization": authorization})

    error_of(answer, 401, "unauthorized")


def test_a_token_with_the_wrong_secret_is_refused(console_deployment: Deployment):
    real = console_deployment.tokens["viewer"]
    prefix, token_id, secret = real.split("_", 2)
    forged = f"{prefix}_{token_id}_{'B' if secret[0] != 'B' else 'C'}{secret[1:]}"

    with httpx.Client(base_url=console_deployment.admin_url) as api:
        answer = api.get("/api/v1/whoami", headers={"authorization": f"Bearer {forged}"})

    error_of(answer, 401, "unauthorized")


def test_whoami_names_the_token(console_deployment: Deployment):
    with console_deployment.api("viewer") as api:
        answer = api.get("/api/v1/whoami")

    assert answer.status_code == 200
    assert answer.json()["name"] == "on-call viewer"
    assert answer.json()["role"] == "viewer"


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
def test_a_viewer_token_cannot_act(console_deployment: Deployment, method: str, path: str):
    with console_deployment.api("viewer") as api:
        answer = api.request(method, path, json={"reason": "keyCompromise"})

    assert "needs an operator token" in error_of(answer, 403, "forbidden")


def test_revoked_and_expired_tokens_stop_working(console_deployment: Deployment):
    token = console_deployment.new_token("operator", "--name", "short-lived")
    token_id = token.split("_")[1]
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=console_deployment.admin_url, headers=headers) as api:
        assert api.get("/api/v1/whoami").status_code == 200
        console_deployment.cli("admin", "token", "revoke", token_id)
        error_of(api.get("/api/v1/whoami"), 401, "unauthorized")

    expiring = console_deployment.new_token("viewer", "--expires-in-days", "0.00002")  # ~2 s
    headers = {"authorization": f"Bearer {expiring}"}
    with httpx.Client(base_url=console_deployment.admin_url, headers=headers) as api:
        console_deployment.wait_for(
            "the token to expire", lambda: api.get("/api/v1/whoami").status_code == 401, 10
        )
    listed = console_deployment.cli("admin", "token", "list")
    assert f"{token_id:>4}  operator  revoked" in listed
    assert "short-lived" in listed and "expired" in listed


# -- the API's document; not on the SCEP port -----------------------------------------------


def test_the_openapi_document_names_every_route(console_deployment: Deployment):
    answer = httpx.get(f"{console_deployment.admin_url}/api/v1/openapi.json")

    assert answer.status_code == 200
    paths = answer.json()["paths"]
    for route in (
        "/api/v1/requests",
        "/api/v1/requests/{transaction_id}",
        "/api/v1/certificates",
        "/api/v1/certificates/{serial}",
        "/api/v1/certificates/{serial}/revoke",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/{letter_id}/replay",
        "/api/v1/dead-letters/{letter_id}/purge",
        "/api/v1/cas",
        "/api/v1/health",
    ):
        assert route in paths, sorted(paths)


def test_the_scep_port_serves_neither_the_api_nor_the_console(console_deployment: Deployment):
    scep = console_deployment.scep_url.removesuffix("/scep")
    token = console_deployment.tokens["operator"]
    for path in ("/api/v1/health", "/api/v1/openapi.json", "/login", "/dead-letters"):
        answer = httpx.get(f"{scep}{path}", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 404, path


# -- requests --------------------------------------------------------------------------------


def test_requests_by_state_and_one_with_its_history(console_deployment: Deployment):
    console_deployment.issued("api-listed")

    with console_deployment.api("viewer") as api:
        issued = api.get("/api/v1/requests", params={"state": "issued"})
        recent = api.get("/api/v1/requests")
        shown = api.get("/api/v1/requests/tx-api-listed")

    assert issued.status_code == 200 and issued.json()["state"] == "ISSUED"
    assert "tx-api-listed" in [r["transaction_id"] for r in issued.json()["requests"]]
    assert "tx-api-listed" in [r["transaction_id"] for r in recent.json()["requests"]]
    body = shown.json()
    assert body["request"]["state"] == "ISSUED"
    assert body["request"]["subject"] == "CN=api-listed"
    moves = [(e["from_state"], e["to_state"]) for e in body["history"] if e["kind"] == "state"]
    assert moves[0] == (None, "RECEIVED") and moves[-1] == ("SIGNED", "ISSUED")


@pytest.mark.parametrize(
    ("path", "status", "code", "says"),
    [
        ("/api/v1/requests?state=PENDING", 400, "bad_request", "not a request state"),
        ("/api/v1/requests?limit=0", 400, "bad_request", "limit"),
        ("/api/v1/requests?limit=many", 400, "bad_request", "limit"),
        ("/api/v1/requests/tx-never-seen", 404, "not_found", "no request with transaction id"),
        ("/api/v1/requests/" + "x" * 300, 400, "bad_request", "transaction id"),
        ("/api/v1/certificates", 400, "bad_request", "give part of a subject"),
        ("/api/v1/certificates?q=%20", 400, "bad_request", "give part of a subject"),
        ("/api/v1/certificates/not-hex", 400, "bad_request", "not a hexadecimal serial"),
        ("/api/v1/certificates/00", 400, "bad_request", "not a hexadecimal serial"),
        ("/api/v1/certificates/" + "f" * 80, 400, "bad_request", "not a hexadecimal serial"),
        ("/api/v1/certificates/abc123", 404, "not_found", "no certificate with serial abc123"),
        ("/api/v1/certificates/abc123/pem", 404, "not_found", "no certificate with serial"),
        ("/api/v1/certificates/abc123/p12", 404, "not_found", "pem or der"),
        ("/api/v1/dead-letters?step=sing", 400, "bad_request", "not a step"),
        ("/api/v1/dead-letters/no-such-letter", 404, "not_found", "no dead letter with id"),
        ("/api/v1/cas/x/crl", 400, "bad_request", "not a generation number"),
        ("/api/v1/cas/42/crl", 404, "not_found", "no CA generation 42"),
        ("/api/v1/cas/0/key", 404, "not_found", "crl or certificate"),
        ("/api/v1/no-such-route", 404, "not_found", "Not Found"),
        ("/api/v1/requests/tx%00nul", 400, "bad_request", "control characters"),
        ("/api/v1/certificates?q=a%00b", 400, "bad_request", "control characters"),
        ("/api/v1/dead-letters/x%0Ay", 400, "bad_request", "control characters"),
    ],
)
def test_bad_input_is_a_documented_json_error(
    console_deployment: Deployment, path: str, status: int, code: str, says: str
):
    with console_deployment.api("viewer") as api:
        answer = api.get(path)

    assert says in error_of(answer, status, code)


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/v1/certificates/not-hex/revoke", {"reason": "keyCompromise"}, 400, "serial"),
        ("/api/v1/certificates/abc123/revoke", {"reason": "keyCompromise"}, 404, "abc123"),
        ("/api/v1/certificates/abc123/revoke", {"reason": "boredom"}, 400, "revocation reason"),
        ("/api/v1/certificates/abc123/revoke", {"reason": 5}, 400, "reason"),
        ("/api/v1/certificates/abc123/revoke", {"why": "x"}, 400, "why"),
        ("/api/v1/certificates/abc123/revoke", "{not json", 400, "JSON"),
        ("/api/v1/certificates/abc123/revoke", "[]", 400, "body"),
        ("/api/v1/dead-letters/no-such-letter/replay", None, 404, "no dead letter"),
        ("/api/v1/dead-letters/no-such-letter/purge", None, 404, "no dead letter"),
        ("/api/v1/dead-letters/" + "x" * 300 + "/purge", None, 400, "dead letter id"),
    ],
)
def test_bad_actions_are_documented_json_errors(
    console_deployment: Deployment, path: str, body: object, status: int, says: str
):
    with console_deployment.api("operator") as api:
        if isinstance(body, str):
            answer = api.post(path, content=body, headers={"content-type": "application/json"})
        else:
            answer = api.post(path, json=body)

    code = {400: "bad_request", 404: "not_found"}[status]
    assert says.lower() in error_of(answer, status, code).lower()


# -- certificates ---------------------------------------------------------------------------


def test_a_certificate_found_by_device_name_downloads_and_revokes(console_deployment: Deployment):
    rep = console_deployment.issued("api-revoked-laptop")
    serial = format(rep.certificates[0].serial_number, "x")

    with console_deployment.api("operator") as api:
        found = api.get("/api/v1/certificates", params={"q": "REVOKED-LAPTOP"}).json()
        before = api.get(f"/api/v1/certificates/{serial.upper()}").json()
        pem = api.get(f"/api/v1/certificates/{serial}/pem")
        der = api.get(f"/api/v1/certificates/{serial}/der")
        revoked = api.post(
            f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
        )
        again = api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "superseded"})
        after = api.get(f"/api/v1/certificates/{serial}").json()
        history = api.get("/api/v1/requests/tx-api-revoked-laptop").json()["history"]

    assert [c["serial"] for c in found["certificates"]] == [serial]
    assert before["status"] == "valid" and before["subject"] == "CN=api-revoked-laptop"
    assert x509.load_pem_x509_certificate(pem.content).serial_number == int(serial, 16)
    assert x509.load_der_x509_certificate(der.content).serial_number == int(serial, 16)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["already_revoked"] is False
    assert revoked.json()["certificate"]["status"] == "revoked"
    assert again.json()["already_revoked"] is True
    assert after["status"] == "revoked"
    assert after["revocation_reason"] == "key-compromise"  # the first revocation stands
    [action] = after["operator_actions"]
    assert action["action"] == "revoke" and action["actor"].endswith("'pki operator' (operator)")
    notes = [e["detail"] for e in history if e["kind"] == "operator"]
    assert notes == [f"certificate {serial} revoked (key-compromise) by {action['actor']}"], history

    def listed_on_the_crl() -> bool:
        with console_deployment.api("viewer") as api:
            answer = api.get("/api/v1/cas/0/crl")
        crl = x509.load_der_x509_crl(answer.content)
        return crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    console_deployment.wait_for("the CRL to list the revoked certificate", listed_on_the_crl)


def test_ca_generations_with_their_latest_crl(console_deployment: Deployment):
    with console_deployment.api("viewer") as api:
        cas = api.get("/api/v1/cas").json()
        certificate = api.get("/api/v1/cas/0/certificate")

    assert cas["active"] == 0 and cas["rollover"] == {"staged": [], "pending": False}
    [generation] = cas["generations"]
    assert generation["status"] == "active"
    assert generation["ca"]["subject"] == "CN=scepline lab CA"
    assert generation["ra"]["subject"] == "CN=scepline lab RA"
    assert generation["crl"]["number"] >= 1
    ca = x509.load_pem_x509_certificate(certificate.content)
    assert format(ca.serial_number, "x") == generation["ca"]["serial"]


# -- dead letters ---------------------------------------------------------------------------


def outage_dead_letter(deployment: Deployment, label: str) -> dict[str, object]:
    """Intune fails every validateRequest: the device's request is dead-lettered."""
    deployment.sim.add_fault(Route.VALIDATE_REQUEST, "internal_error", count=100_000)
    try:
        rep = deployment.enrol(label)
        assert rep.status is PkiStatus.PENDING, rep
        letter = deployment.wait_for(
            "the request's dead letter", lambda: deployment.parked(f"tx-{label}")
        )
    finally:
        deployment.sim.clear_faults()
    return letter  # type: ignore[return-value]


def test_an_outage_s_dead_letter_is_replayed_and_its_request_issued(
    console_deployment: Deployment,
):
    letter = outage_dead_letter(console_deployment, "api-replayed")
    letter_id = str(letter["id"])

    with console_deployment.api("viewer") as viewer:
        refused = viewer.post(f"/api/v1/dead-letters/{letter_id}/replay")
    with console_deployment.api("operator") as api:
        shown = api.get(f"/api/v1/dead-letters/{letter_id}")
        replayed = api.post(f"/api/v1/dead-letters/{letter_id}/replay")
    assert shown.status_code == 200
    assert shown.json()["step"] == "validate" and shown.json()["resolved"] is False
    assert "intune" in str(shown.json()["reason"]).lower(), shown.json()
    error_of(refused, 403, "forbidden")
    assert replayed.status_code == 200, replayed.text
    assert [o["outcome"] for o in replayed.json()["outcomes"]] == ["replayed"]

    console_deployment.wait_for(
        "the replayed request to be issued",
        lambda: console_deployment.request_state("tx-api-replayed") == "ISSUED",
    )
    with console_deployment.api("viewer") as api:
        history = api.get("/api/v1/requests/tx-api-replayed").json()["history"]
        gone = api.get(f"/api/v1/dead-letters/{letter_id}")
    assert any(
        "replayed by token" in e["detail"] and "pki operator" in e["detail"] for e in history
    )
    error_of(gone, 404, "not_found")


def test_a_purged_dead_letter_ends_its_request_failed(console_deployment: Deployment):
    letter = outage_dead_letter(console_deployment, "api-purged")

    with console_deployment.api("operator") as api:
        purged = api.post(f"/api/v1/dead-letters/{letter['id']}/purge")
        shown = api.get("/api/v1/requests/tx-api-purged").json()

    assert purged.status_code == 200, purged.text
    assert [o["outcome"] for o in purged.json()["outcomes"]] == ["purged"]
    assert shown["request"]["state"] == "FAILED"
    details = [e["detail"] for e in shown["history"]]
    assert any(d.startswith("dead letter purged by an operator: token ") for d in details)
    assert [a["action"] for a in shown["operator_actions"]] == ["purge"]


# -- health and the dashboard ---------------------------------------------------------------


def health_with_intune_reported(deployment: Deployment) -> dict[str, object]:
    """The health once some process has reported an Intune call (every few seconds)."""

    def reported() -> dict[str, object] | None:
        with deployment.api("viewer") as api:
            health = api.get("/api/v1/health").json()
        return health if health["intune"].get("last_call") else None

    return deployment.wait_for("an Intune call reported", reported, 20)  # type: ignore[return-value]


def test_health_of_the_parts(console_deployment: Deployment):
    console_deployment.issued("api-health")

    health: dict[str, Any] = health_with_intune_reported(console_deployment)

    assert health["database"]["ok"] is True
    assert health["broker"]["ok"] is True
    assert health["broker"]["kind"] == (
        "in-process" if console_deployment.kind == "up" else "rabbitmq"
    )
    assert health["hsm"] == {"ok": None, "backend": "file", "detail": "CA and RA keys in files"}
    assert health["intune"]["configured"] is True
    assert health["intune"]["last_call"] in ("validateRequest", "successNotification")
    assert health["ca"]["generation"] == 0 and health["ca"]["ca_days_left"] > 3000
    if console_deployment.kind == "up":
        assert health["serving"]["ready"] is True


def test_the_dashboard_s_figures(console_deployment: Deployment):
    console_deployment.issued("api-dashboard")
    health_with_intune_reported(console_deployment)

    with console_deployment.api("viewer") as api:
        figures = api.get("/api/v1/dashboard").json()
        actions = api.get("/api/v1/actions").json()["actions"]

    assert figures["issued_last_hour"] >= 1
    assert len(figures["issued_per_hour"]) == 24
    assert figures["issued_per_hour"][-1]["issued"] >= 1
    assert figures["outcomes_24h"]["ISSUED"] >= 1
    assert set(figures["dead_letters"]) == {"validate", "sign", "notify"}
    assert figures["intune"]["configured"] is True and figures["intune"]["calls"] >= 1
    assert isinstance(actions, list)
    json.dumps(figures)  # plain JSON all the way down
