"""The configuration file of SCEP endpoints (SCEPLINE_CONFIG, docs/endpoints.md):
the issue's example works as written; every mistake is one line naming its
key path; endpoints are served where they say."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.config_file import ConfigError, load_config, parse_duration
from scepline_shared.configured import endpoints_from
from scepline_shared.settings import Settings
from tests.support.endpoints import ISSUE_EXAMPLE as EXAMPLE

PROFILE = "[endpoints.a]\nchallenge = 'manual'\n[endpoints.a.profile]\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scepline.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert all(line.startswith(f"{path}: ") for line in caught.value.problems)
    return [line.removeprefix(f"{path}: ") for line in caught.value.problems]


def test_the_issues_example_works_as_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, config=write(tmp_path, EXAMPLE))

    endpoints = endpoints_from(settings)

    assert endpoints.names == ("default", "wifi", "servers", "gear")
    wifi, servers, gear = endpoints["wifi"], endpoints["servers"], endpoints["gear"]
    assert (wifi.provider, wifi.static_challenge, wifi.profile.validity_days) == (
        "static",
        "wifi-secret",
        30,
    )
    assert wifi.profile.extended_key_usage == (ExtendedKeyUsageOID.CLIENT_AUTH,)
    assert (servers.provider, servers.profile.validity_days) == ("one-time", 90)
    assert servers.profile.extended_key_usage == (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    assert (gear.provider, gear.approval_ttl) == ("manual", timedelta(hours=72))
    assert endpoints["default"].paths == ("/scep",)
    assert wifi.paths == ("/scep/wifi",)


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/scep", "default"),
        ("scep/", "default"),
        ("/cgi-bin/pkiclient.exe", "default"),
        ("/scep/pkiclient.exe", "default"),
        ("/certsrv/mscep/mscep.dll/pkiclient.exe", "default"),
        ("/scep/wifi", "wifi"),
        ("/scep/wifi/pkiclient.exe", "wifi"),
        ("/scep/wifi/cgi-bin/pkiclient.exe", "wifi"),
        ("/scep/gear/", "gear"),
        ("/ndes", "servers"),
        ("/ndes/pkiclient.exe", "servers"),
        ("/scep/nope", None),
        ("/scep/nope/pkiclient.exe", None),
        ("/scepx", None),
        ("/pkiclient.exe.bak", None),
    ],
)
def test_paths_name_endpoints(tmp_path: Path, path: str, endpoint: str | None) -> None:
    text = EXAMPLE.replace('challenge = "one-time"', 'challenge = "one-time"\npaths = ["/ndes"]')
    endpoints = endpoints_from(Settings(data_dir=tmp_path, config=write(tmp_path, text)))

    assert endpoints.resolve(path) == endpoint


def test_default_endpoint_names_the_endpoint_at_scep_or_none(tmp_path: Path) -> None:
    chosen = endpoints_from(
        Settings(data_dir=tmp_path, config=write(tmp_path, 'default_endpoint = "wifi"\n' + EXAMPLE))
    )
    nothing = endpoints_from(
        Settings(data_dir=tmp_path, config=write(tmp_path, "default_endpoint = false\n" + EXAMPLE))
    )

    assert "default" not in chosen and chosen.resolve("/scep") == "wifi"
    assert chosen.resolve("/cgi-bin/pkiclient.exe") == "wifi"
    assert chosen.resolve("/scep/wifi") == "wifi"
    assert nothing.resolve("/scep") is None
    assert nothing.resolve("/cgi-bin/pkiclient.exe") is None
    assert nothing.resolve("/scep/gear") == "gear"


def test_every_kind_of_mistake_is_one_line_naming_its_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"
colour = "blue"

[endpoints.wifi.profile]
extended_key_usage = ["clientAuth", "clientAuht"]

[endpoints.servers]
challenge = "one-time"
ca = "corp"
paths = ["/scep/wifi", "/ndes"]

[endpoints.wifi]
challenge = "manual"

[endpoints.other]
challenge = "manual"
paths = ["/ndes"]
""",
    )

    eku = [line for line in found if "extended_key_usage" in line]
    assert sorted(set(found) - set(eku)) == sorted(
        [
            "endpoints.wifi: duplicate endpoint name: declared again at line 15 (first at "
            "line 2); endpoint names must be unique",
            "endpoints.wifi.colour: unknown key",
            "endpoints.servers.ca: unknown CA 'corp'; CAs: default (default: the CA under "
            "SCEPLINE_DATA_DIR/ca; others: [cas.NAME])",
            "endpoints.servers.paths[0]: path '/scep/wifi' conflicts with endpoint wifi's path",
            "endpoints.other.paths[0]: path '/ndes' conflicts with endpoints.servers.paths[1]",
        ]
    )
    [line] = eku
    assert line.startswith(
        "endpoints.wifi.profile.extended_key_usage[1]: unknown EKU 'clientAuht' "
        "(did you mean 'clientAuth'?)"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "[endpoints.a]\nchallenge = 'manual'\nchalenge = 'static'\n",
            "endpoints.a.chalenge: unknown key (did you mean 'challenge'?)",
        ),
        ("[endpoints.a]\n", "endpoints.a.challenge: missing (one of: static, one-time, manual"),
        ("[endpoints.a]\nchallenge = 'pin'\n", "endpoints.a.challenge: not one of the accepted"),
        ("[endpoints.a]\nchallenge = 'static'\n", 'endpoints.a: challenge = "static" needs'),
        (
            "[endpoints.a]\nchallenge = 'manual'\nstatic_challenge = 's'\n",
            'endpoints.a: static_challenge is only for challenge = "static"',
        ),
        ("[endpoints.Wifi]\nchallenge = 'manual'\n", "endpoints.Wifi: 'Wifi' is not an endpoint"),
        ("[endpoints.default]\nchallenge = 'manual'\n", "'default' is the name of the endpoint"),
        (
            "[endpoints.a]\nchallenge = 'manual'\n[endpoints.a.profile]\nvalidity_days = 'x'\n",
            "endpoints.a.profile.validity_days: is not a whole number",
        ),
        (
            "[endpoints.a]\nchallenge = 'manual'\n[endpoints.a.profile]\nvalidity_days = 0\n",
            "endpoints.a.profile.validity_days: is out of range",
        ),
        (
            PROFILE + "key_usage = ['keyCertSign']\n",
            "endpoints.a.profile.key_usage[0]: 'keyCertSign' is for CA certificates",
        ),
        (
            PROFILE + "san_patterns = {dns = '('}\n",
            "endpoints.a.profile.san_patterns.dns: not a regular expression",
        ),
        (
            "[endpoints.a]\nchallenge = 'manual'\n[endpoints.a.profile]\n"
            "required_san_types = ['dns']\nsan_types = ['email']\n",
            "required_san_types: 'dns' must be among san_types",
        ),
        (
            "[endpoints.a]\nchallenge = 'one-time'\nchallenge_ttl = 'soon'\n",
            "endpoints.a.challenge_ttl: 'soon' is not a duration",
        ),
        ("[endpoints.a]\nchallenge = 'manual'\npaths = ['/crl']\n", "conflicts with '/crl'"),
        ("[endpoints.a]\nchallenge = 'manual'\npaths = ['/scep']\n", "conflicts with /scep, the"),
        ('default_endpoint = "b"\n[endpoints.a]\nchallenge = "manual"\n', "no endpoint named 'b'"),
        ("[endpoints]\n", "endpoints: the file declares no endpoint"),
        ("[endpoints.a\nchallenge = 'manual'\n", "not valid TOML"),
        ("secret = 1\n[endpoints.a]\nchallenge = 'manual'\n", "secret: unknown key"),
    ],
)
def test_a_mistake_is_named_with_its_key(tmp_path: Path, text: str, says: str) -> None:
    found = problems(tmp_path, text)

    assert len(found) == 1, found
    assert says in found[0], found


def test_a_secret_is_never_echoed(tmp_path: Path) -> None:
    found = problems(tmp_path, "[endpoints.a]\nchallenge = 'static'\nstatic_challenge = 42\n")

    assert found == ["endpoints.a.static_challenge: is not a string (put it in quotes)"]


def test_a_static_challenge_file_is_read_and_a_missing_one_named(tmp_path: Path) -> None:
    secret = tmp_path / "wifi-secret"
    secret.write_text("from-a-file\n")
    text = f"[endpoints.w]\nchallenge = 'static'\nstatic_challenge_file = '{secret}'\n"
    endpoints = endpoints_from(Settings(data_dir=tmp_path, config=write(tmp_path, text)))
    missing = text.replace("wifi-secret", "gone")

    assert endpoints["w"].static_challenge == "from-a-file"
    with pytest.raises(ConfigError, match=r"endpoints\.w: static_challenge_file .*gone: cannot"):
        endpoints_from(Settings(data_dir=tmp_path, config=write(tmp_path, missing)))


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: cannot be read"):
        load_config(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("120", 120)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "0", "-5m", "5x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_eku_names_are_read_in_both_spellings_from_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        cert_extended_key_usage=["serverAuth", "client_auth", "id-kp-OCSPSigning"],
    )

    profile = endpoints_from(settings)["default"].profile

    assert profile.extended_key_usage == (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.OCSP_SIGNING,
    )


def test_the_file_reads_both_spellings_and_the_profile_rules(tmp_path: Path) -> None:
    text = """
[endpoints.vpn]
challenge = "manual"
approval_ttl_hours = 1.5
renewal = "any-endpoint"
renewal_san_match = "exact"

[endpoints.vpn.profile]
extended_key_usage = ["client_auth", "ipsecIKE"]
extended_key_usage_from_csr = ["serverAuth", "clientAuth"]
required_san_types = ["dns"]
san_patterns = { dns = '[a-z0-9-]+\\.vpn\\.example\\.com' }
required_subject_attributes = ["CN"]
subject_patterns = { commonName = "[a-z0-9-]+" }
key_types = ["P-256"]
"""
    vpn = endpoints_from(Settings(data_dir=tmp_path, config=write(tmp_path, text)))["vpn"]

    assert (vpn.approval_ttl, vpn.renewal, vpn.exact_renewal_sans) == (
        timedelta(hours=1.5),
        "any-endpoint",
        True,
    )
    assert vpn.profile.csr_extended_key_usage == (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    assert vpn.profile.required_san_types == {"dns"}
    assert vpn.profile.san_patterns == (("dns", r"[a-z0-9-]+\.vpn\.example\.com"),)
    assert vpn.profile.required_subject_attributes == {"cn"}
    assert vpn.profile.subject_patterns == (("cn", "[a-z0-9-]+"),)
    assert vpn.profile.allowed_key_types == {"P-256"}


def test_named_cas_are_declared_and_referenced(tmp_path: Path) -> None:
    text = """
[cas.corp]
common_name = "Corp Devices CA"
key_type = "ec"
key_size = 384
validity_days = 1825

[cas.lab]

[endpoints.servers]
challenge = "one-time"
ca = "corp"

[endpoints.gear]
challenge = "manual"
ca = "lab"
"""
    endpoints = endpoints_from(Settings(data_dir=tmp_path, config=write(tmp_path, text)))

    assert list(endpoints.cas) == ["default", "corp", "lab"]
    corp, lab = endpoints.cas["corp"], endpoints.cas["lab"]
    assert (corp.common_name, corp.ra_common_name, corp.key_type, corp.key_size) == (
        "Corp Devices CA",
        "scepline corp RA",
        "ec",
        384,
    )
    assert corp.validity_days == 1825
    assert (lab.common_name, lab.key_type, lab.key_size) == ("scepline lab CA", "rsa", None)
    assert endpoints["servers"].ca == "corp" and endpoints["gear"].ca == "lab"
    assert endpoints["default"].ca == "default"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[cas.Corp]\n", "cas.Corp: 'Corp' is not a CA name"),
        ("[cas.default]\n", "'default' is the CA under SCEPLINE_DATA_DIR/ca"),
        ("[cas.corp]\nkey_type = 'dsa'\n", "cas.corp.key_type: not one of the accepted values"),
        ("[cas.corp]\nkey_type = 'ec'\nkey_size = 521\n", "an EC CA key is 256 or 384"),
        ("[cas.corp]\ncommon_nam = 'x'\n", "cas.corp.common_nam: unknown key (did you mean"),
    ],
)
def test_a_ca_mistake_is_named(tmp_path: Path, text: str, says: str) -> None:
    found = problems(tmp_path, text + "[endpoints.a]\nchallenge = 'manual'\n")

    assert len(found) == 1, found
    assert says in found[0], found


def test_an_unknown_ca_suggests_a_declared_one(tmp_path: Path) -> None:
    found = problems(tmp_path, "[cas.corp]\n[endpoints.a]\nchallenge = 'manual'\nca = 'crop'\n")

    assert found == [
        "endpoints.a.ca: unknown CA 'crop' (did you mean 'corp'?); CAs: default, corp "
        "(default: the CA under SCEPLINE_DATA_DIR/ca; others: [cas.NAME])"
    ]


def test_an_endpoints_limits_are_read_and_checked(tmp_path: Path) -> None:
    text = (
        "[endpoints.a]\nchallenge = 'manual'\n[endpoints.a.limits]\n"
        "enrolments_per_minute = 120\nmax_awaiting_approval = 5\nsync_wait_seconds = 2.5\n"
    )
    a = endpoints_from(Settings(data_dir=tmp_path, config=write(tmp_path, text)))["a"]
    found = problems(tmp_path, text.replace("enrolments_per_minute", "requests_per_minute"))

    assert (a.enrolments_per_minute, a.max_awaiting_approval, a.sync_wait_seconds) == (
        120,
        5,
        2.5,
    )
    assert found == [
        "endpoints.a.limits.requests_per_minute: unknown key "
        "(did you mean 'enrolments_per_minute'?)"
    ]


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("tenant = 't'\nclient_id = 'c'\n", "endpoints.a.intune: exactly one credential"),
        (
            "tenant = 't'\nclient_id = 'c'\nclient_secret = 's'\nauthority_url = 'http://x'\n",
            "endpoints.a.intune.authority_url: must be an https:// URL",
        ),
        ("client_id = 'c'\nclient_secret = 's'\n", "endpoints.a.intune.tenant: missing"),
    ],
)
def test_an_intune_tenant_table_is_checked(tmp_path: Path, table: str, says: str) -> None:
    found = problems(
        tmp_path, "[endpoints.a]\nchallenge = 'intune'\n[endpoints.a.intune]\n" + table
    )

    assert len(found) == 1 and says in found[0], found
    assert "'s'" not in found[0]


def test_an_intune_table_needs_the_intune_provider_and_the_settings_otherwise(
    tmp_path: Path,
) -> None:
    table = "[endpoints.a.intune]\ntenant = 't'\nclient_id = 'c'\nclient_secret = 's'\n"
    misplaced = problems(tmp_path, "[endpoints.a]\nchallenge = 'manual'\n" + table)
    settings = Settings(
        data_dir=tmp_path, config=write(tmp_path, "[endpoints.b]\nchallenge = 'intune'\n")
    )

    assert misplaced == ['endpoints.a: an [intune] table is only for challenge = "intune"']
    with pytest.raises(
        ConfigError, match=r"endpoints\.b\.challenge: .* needs SCEPLINE_INTUNE_TENANT"
    ):
        endpoints_from(settings)


def test_a_ca_declared_twice_is_named_and_the_rest_still_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "[cas.corp]\n[cas.corp]\nkey_type = 'ec'\n[endpoints.a]\nchallenge = 'manual'\nbogus = 1\n",
    )

    assert found == [
        "cas.corp: duplicate CA name: declared again at line 2 (first at line 1); "
        "CA names must be unique",
        "endpoints.a.bogus: unknown key",
    ]
