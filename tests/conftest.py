"""Shared fixtures and markers for the library's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` when no GPU is present (they run wherever one is)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; torch.cuda.is_available() is False")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run a module's tests on one intra-op thread and restore the thread count afterwards.

    Modules whose models and tensors are tiny request it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``: on a loaded 2-core machine extra
    intra-op threads only spin.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Run a test on the CPU and, when a GPU is present, on CUDA too."""
    return torch.device(request.param)
