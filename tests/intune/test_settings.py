"""Settings for the Intune provider: complete or refused at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from scepline.admin import dead_letters
from scepline_shared.intune import IntuneConfig, IntuneConfigurationError
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings

BASE: dict[str, Any] = {
    "challenge_provider": "intune",
    "intune_tenant": "contoso.onmicrosoft.com",
    "intune_client_id": "00000000-0000-0000-0000-00000000c11e",
}


def test_the_defaults_give_microsofts_endpoints_and_the_double_slash_scope():
    config = IntuneConfig.from_settings(Settings(**BASE, intune_client_secret="s"))
    assert config.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert config.intune_scope == "https://api.manage.microsoft.com//.default"
    assert config.graph_scope == "https://graph.microsoft.com/.default"
    assert config.endpoints_url == (
        "https://graph.microsoft.com/v1.0/servicePrincipals/"
        "appId=0000000a-0000-0000-c000-000000000000/endpoints"
    )
    assert "'s'" not in repr(config)  # the secret stays out of reprs


@pytest.mark.parametrize(
    "changes",
    [
        {"intune_tenant": None, "intune_client_secret": "s"},
        {"intune_client_id": None, "intune_client_secret": "s"},
        {},  # no credential
        {"intune_client_secret": "s", "intune_client_secret_file": "/run/secret"},
        {"intune_client_certificate_file": "/etc/app.pem"},  # without its key
        {"intune_client_secret": "s", "intune_authority_url": "http://login.example"},
    ],
)
def test_incomplete_or_ambiguous_intune_settings_are_refused(changes: dict[str, Any]):
    with pytest.raises(ValidationError):
        Settings(**{**BASE, **changes})


def test_the_static_provider_needs_none_of_it():
    assert Settings().challenge_provider == "static"


def test_a_secret_file_is_read_without_its_final_newline(tmp_path: Path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    config = IntuneConfig.from_settings(Settings(**BASE, intune_client_secret_file=secret_file))
    assert config.client_secret == "from-a-file"


def test_unreadable_credential_files_are_a_configuration_error(tmp_path: Path):
    settings = Settings(
        **BASE,
        intune_client_certificate_file=tmp_path / "missing.pem",
        intune_client_key_file=tmp_path / "missing.key",
    )
    with pytest.raises(IntuneConfigurationError, match=r"missing\.pem"):
        IntuneConfig.from_settings(settings)


async def test_dead_letters_can_be_listed_while_the_intune_credential_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Broken configuration is when dead letters pile up: listing must still work;
    # only replay and purge need the provider.
    settings = Settings(
        **BASE,
        data_dir=tmp_path,
        intune_client_certificate_file=tmp_path / "missing.pem",
        intune_client_key_file=tmp_path / "missing.key",
    )

    assert await dead_letters(settings, "list", list(Step), None) == 0
    assert "0 parked request(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="Intune provider"):
        await dead_letters(settings, "replay", list(Step), None)
