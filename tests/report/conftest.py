"""Fixtures of the report's tests: the fake saved results of :mod:`fakes`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import write_sources


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """The fake results folder (shared by a module's tests: nothing writes into it)."""
    return write_sources(tmp_path_factory.mktemp("report-sources"))
