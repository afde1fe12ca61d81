"""export's ``git_commit``: the commit the model card records, from git in a checkout, else from the image's
MLNT_GIT_COMMIT (the Dockerfile's build argument GIT_COMMIT): the image has neither git nor .git."""

from components.export import git_commit


def test_without_git_the_commit_is_the_images_build_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git: the image
    monkeypatch.setenv("MLNT_GIT_COMMIT", "0123abcd")
    assert git_commit() == "0123abcd"


def test_outside_a_repository_the_commit_is_the_images_build_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # git is here, the repository is not
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("MLNT_GIT_COMMIT", "0123abcd")
    assert git_commit() == "0123abcd"


def test_without_either_the_commit_is_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MLNT_GIT_COMMIT", raising=False)
    assert git_commit() == "unknown"
    monkeypatch.setenv("MLNT_GIT_COMMIT", "")  # the build argument left empty: no commit either
    assert git_commit() == "unknown"


def test_a_checkouts_own_commit_wins_over_the_variable(tmp_path, monkeypatch):
    """Where git answers (a checkout), its commit is the card's, whatever the environment says."""
    fake = tmp_path / "git"  # a git that answers as in a clean checkout at commit feedface
    fake.write_text('#!/bin/sh\n[ "$1" = rev-parse ] && echo feedface\nexit 0\n')
    fake.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("MLNT_GIT_COMMIT", "0123abcd")
    assert git_commit() == "feedface"
