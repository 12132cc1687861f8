from __future__ import annotations

import pytest
import torch

from advbook import utils


def test_seed_everything_repeats_random_streams() -> None:
    g1 = utils.seed_everything(5)
    a = torch.rand(3), torch.rand(3, generator=g1)
    g2 = utils.seed_everything(5)
    b = torch.rand(3), torch.rand(3, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="non-negative"):
        utils.seed_everything(-1)


def test_get_device() -> None:
    assert utils.get_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert utils.get_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            utils.get_device("cuda")


def test_progress_enabled(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ADVBOOK_PROGRESS", raising=False)
    assert utils.progress_enabled() is True
    monkeypatch.setenv("ADVBOOK_PROGRESS", "0")
    assert utils.progress_enabled() is False
    assert utils.progress_enabled(True) is True
    monkeypatch.delenv("ADVBOOK_PROGRESS")
    monkeypatch.setenv("CI", "true")
    assert utils.progress_enabled() is False
