import pytest

from tests.reliability import workspace


@pytest.fixture(scope="session")
def good_workspace(tmp_path_factory):
    """Every step's outputs and a released champion, built once (read-only for the tests: copy it)."""
    return workspace.build(tmp_path_factory.mktemp("good") / "ws")


@pytest.fixture
def work(good_workspace, tmp_path, monkeypatch):
    """A fresh copy of the good workspace, as the current folder."""
    root = workspace.copy(good_workspace, tmp_path / "ws")
    monkeypatch.chdir(root)
    return root
