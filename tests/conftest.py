"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Mark a test whose call failed, so fixtures can add what explains it (a server's log) to the report."""
    report = yield
    if report.when == "call" and report.failed:
        item.user_properties.append(("call_failed", True))
    return report


# --- tiny model fixtures (weights loading) ------------------------------------------------------------------
# Built once per session into one temporary folder; each is a few MB and takes well under a second.
# The builders live in tests/fixtures/tiny_models.py.


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def _checkpoint(folder: Path, family: str, inpaint: bool = False, v_prediction: bool = False) -> Path:
    from tests.fixtures.tiny_models import checkpoint_name, make_checkpoint

    path = folder / checkpoint_name(family, inpaint, v_prediction)
    if path.exists():
        return path
    return make_checkpoint(folder, family, inpaint=inpaint, v_prediction=v_prediction)


@pytest.fixture(scope="session")
def tiny_sd1_ckpt(tiny_models_dir: Path) -> Path:
    return _checkpoint(tiny_models_dir, "sd1")


@pytest.fixture(scope="session")
def tiny_sd1_inpaint_ckpt(tiny_models_dir: Path) -> Path:
    return _checkpoint(tiny_models_dir, "sd1", inpaint=True)


@pytest.fixture(scope="session")
def tiny_sd2_ckpt(tiny_models_dir: Path) -> Path:
    return _checkpoint(tiny_models_dir, "sd2")


@pytest.fixture(scope="session")
def tiny_sd2_v_ckpt(tiny_models_dir: Path) -> Path:
    """SD2 768-v style: v-prediction, marked by a ``v_pred`` key."""
    return _checkpoint(tiny_models_dir, "sd2", v_prediction=True)


@pytest.fixture(scope="session")
def tiny_sdxl_ckpt(tiny_models_dir: Path) -> Path:
    return _checkpoint(tiny_models_dir, "sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_inpaint_ckpt(tiny_models_dir: Path) -> Path:
    return _checkpoint(tiny_models_dir, "sdxl", inpaint=True)


@pytest.fixture(scope="session")
def tiny_sd1_diffusers(tiny_models_dir: Path) -> Path:
    from tests.fixtures.tiny_models import make_diffusers_folder

    return make_diffusers_folder(tiny_models_dir, "sd1")


# --- end of tiny model fixtures -----------------------------------------------------------------------------
