from __future__ import annotations

import pytest

from scepline_shared.ca import CaMaterial, ensure_lab_ca


@pytest.fixture(scope="session")
def rsa_lab(tmp_path_factory: pytest.TempPathFactory) -> CaMaterial:
    """A lab CA with a 2048-bit RSA CA key (the 3072 default is tested once in test_lab)."""
    return ensure_lab_ca(tmp_path_factory.mktemp("rsa-lab"), ca_key_size=2048)


@pytest.fixture(scope="session")
def ec_lab(tmp_path_factory: pytest.TempPathFactory) -> CaMaterial:
    return ensure_lab_ca(tmp_path_factory.mktemp("ec-lab"), ca_key_type="ec")
