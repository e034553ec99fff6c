"""What an operator installs: the product's wheel, without the developer tools.

The Intune simulator and the SCEP client that the tests and benchmarks drive
live in the repository's dev-only distribution (``devtools/``, installed by
``uv sync`` with the dev dependency group). The wheel built from
``pyproject.toml`` carries only the product, and ``scepline intune-sim`` on an
installation of that wheel says how to get the simulator instead of failing
with a traceback."""

from __future__ import annotations

import os
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = {
    "scepline",
    "scepline_shared",
    "scepline_ingress",
    "scepline_validator",
    "scepline_signer",
    "scepline_notifier",
}


def _uv() -> str:
    uv = os.environ.get("UV")  # set by `uv run`, which is how the suite runs
    if not uv:
        pytest.fail("run the suite with `uv run` (scripts/test does): these tests build with uv")
    return uv


def venv_site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("scepline-*.whl")
    return built


def test_the_product_wheel_holds_the_product_packages_and_no_developer_tools(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == PRODUCT_PACKAGES
    assert not [name for name in names if "intune_sim" in name or "scep_client" in name]


def test_scepline_intune_sim_without_the_developer_tools_says_how_to_get_them(
    wheel: Path, tmp_path: Path
):
    venv = tmp_path / "operator"
    subprocess.run([_uv(), "venv", "--quiet", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [_uv(), "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel)],
        check=True,
        timeout=300,
    )
    # The wheel's dependencies, offline: the third-party libraries of this
    # environment. A .pth line adds the directory without running the .pth files
    # in it, so the editable installs of this checkout (the developer tools among
    # them) stay out.
    (venv_site_packages(python) / "dependencies.pth").write_text(sysconfig.get_path("purelib"))
    result = subprocess.run(
        [
            str(venv / "bin" / "scepline"),
            "intune-sim",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "sim"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SCEPLINE_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "uv sync" in result.stderr
    assert not (tmp_path / "sim").exists()
