"""The lab's static challenge, when none is configured: generated once into the
data directory, shared by every process there, never printed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from scepline_devtools.scep_client import build_csr
from scepline_shared.scep import PkiStatus
from scepline_shared.settings import Settings
from scepline_validator.main import LAB_CHALLENGE_FILE, challenge_provider, lab_challenge
from tests.fixtures.scepline import running
from tests.support.pki import name, requester


def test_it_is_generated_once_and_kept_private(tmp_path: Path):
    first, path = lab_challenge(tmp_path / "var")
    again, same_path = lab_challenge(tmp_path / "var")

    assert first == again and len(first) >= 24
    assert path == same_path == tmp_path / "var" / LAB_CHALLENGE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [LAB_CHALLENGE_FILE]  # no temp file left


def test_a_configured_challenge_wins_and_nothing_is_written(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, static_challenge="from the operator")

    _, generated = challenge_provider(settings)

    assert generated is None
    assert not (tmp_path / LAB_CHALLENGE_FILE).exists()


def test_an_emptied_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / LAB_CHALLENGE_FILE).write_text("\n")
    with pytest.raises(ValueError, match="delete it"):
        lab_challenge(tmp_path)


async def test_scepline_up_without_a_challenge_enrols_with_the_generated_one(
    scepline_settings: Settings,
):
    settings = scepline_settings.model_copy(update={"static_challenge": None})
    async with running(settings) as product:
        challenge_file = product.embedded.challenge_file
        assert challenge_file == settings.data_dir / LAB_CHALLENGE_FILE
        challenge = challenge_file.read_text().strip()
        device = requester("lab-device")
        csr = build_csr(device.key, name("lab-device"), challenge=challenge)
        issued = await product.client.enrol(csr, device, transaction_id="tx-lab")
        guesser = requester("guesser")
        wrong = build_csr(guesser.key, name("guesser"), challenge="guessed")
        refused = await product.client.enrol(wrong, guesser, transaction_id="tx-guess")
    assert issued.status is PkiStatus.SUCCESS
    assert refused.status is PkiStatus.FAILURE
