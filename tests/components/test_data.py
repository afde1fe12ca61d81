"""`make data` (components.common.data) and sharing data through a DVC remote, with the real DVC."""

import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from components.common import data
from components.common.data import DEBIAN, FILES, DataFetchError, fetch, main, verify

ROOT = Path(__file__).resolve().parents[2]
needs_dataset = pytest.mark.skipif(not (DEBIAN / FILES[0]).is_file(),
                                   reason="Debian's dataset-fashion-mnist is not installed (make setup installs it)")


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path):
    """A new git repository with the project's DVC set-up and data.dvc, and no data."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    for name in (".dvc/config", ".dvcignore", "data.dvc"):
        shutil.copyfile(ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


@needs_dataset
def test_make_data_gives_a_clean_dvc_status(repo, capsys):
    assert main(["--root", str(repo)]) == 0
    assert "data/ matches data.dvc" in capsys.readouterr().out
    assert "Data and pipelines are up to date." in dvc(repo, "status", "data.dvc")
    assert sorted(p.name for p in (repo / "data" / "fashion-mnist").iterdir()) == sorted(FILES)


@needs_dataset
def test_data_that_is_not_the_recorded_version_is_refused(repo):
    fetch(repo / "data" / "fashion-mnist")
    label_file = repo / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(label_file.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    label_file.write_bytes(gzip.compress(bytes(raw)))
    record = (repo / "data.dvc").read_text()
    with pytest.raises(DataFetchError, match=r"data: expected the version recorded in data.dvc \(\w+\.dir\), "
                                             r"found \w+\.dir; if you changed data/ on purpose"):
        verify(repo)
    assert (repo / "data.dvc").read_text() == record
    assert not (repo / ".data.dvc.verifying").exists()


@needs_dataset
def test_a_run_killed_while_dvc_committed_leaves_no_damaged_record_to_check_against(repo):
    """A `make data` killed during `dvc commit` (whose dvc went on) left data.dvc holding a damaged file's hash,
    and the next `make data` checked the data against it and passed. The record kept aside now stops every check
    while data.dvc differs from it (a change of the user's own is not reverted unasked), saying how to settle it."""
    fetch(repo / "data" / "fashion-mnist")
    record = (repo / "data.dvc").read_text()
    label_file = repo / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    label_file.write_bytes(label_file.read_bytes()[:-100])  # damaged
    kept = repo / ".data.dvc.verifying"
    kept.write_text(record)  # what the killed run kept aside
    dvc(repo, "commit", "--force", "data.dvc")  # what its dvc then wrote: the damaged data's hash
    written = (repo / "data.dvc").read_text()
    assert written != record
    for _ in range(2):
        with pytest.raises(DataFetchError, match=r"verifying: expected no record left by a killed make data, found "
                                                 r"one that differs from data.dvc .* delete \.data\.dvc\.verifying; "
                                                 r"if not, put it back: mv \.data\.dvc\.verifying data.dvc$"):
            verify(repo)
        assert (repo / "data.dvc").read_text() == written and kept.read_text() == record  # nothing decided unasked
    kept.rename(repo / "data.dvc")  # as the message says, where the user changed nothing
    with pytest.raises(DataFetchError, match=r"data: expected the version recorded in data.dvc"):
        verify(repo)
    assert (repo / "data.dvc").read_text() == record and not kept.exists()
    kept.write_text(record)  # a record left aside that data.dvc still holds: nothing to settle
    with pytest.raises(DataFetchError, match=r"data: expected the version recorded in data.dvc"):
        verify(repo)
    assert not kept.exists()


def test_a_missing_source_file_is_named(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(DataFetchError, match=r"src/train-images-idx3-ubyte.gz: expected a Fashion-MNIST file"):
        fetch(tmp_path / "data", tmp_path / "src")


@needs_dataset
@needs_dataset
def test_make_data_from_a_source_folder_prints_where_each_file_came_from(repo, tmp_path, capsys):
    source = tmp_path / "src"
    shutil.copytree(DEBIAN, source)
    assert main(["--root", str(repo), "--source", str(source)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"data: {name}: copied from {source}" for name in FILES] + [
        "data: data/ matches data.dvc (dvc status: up to date)"]


@needs_dataset
def test_the_recorded_images_and_labels_in_other_gzip_bytes_are_kept(repo, tmp_path, capsys):
    """Zalando's archives hold the images and labels Debian recompressed, in other gzip bytes: a download (the
    fallback without the Debian package) failed data.dvc's check of the bytes, and was removed, every time."""
    source = tmp_path / "src"
    source.mkdir()
    for name in FILES:
        (source / name).write_bytes(gzip.compress(gzip.decompress((DEBIAN / name).read_bytes()), compresslevel=1))
    assert main(["--root", str(repo), "--source", str(source)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("data: data/ holds the images and labels data.dvc records, in other gzip bytes (data.dvc "
                       "records Debian's recompressed copies; dvc status shows data modified): kept; `dvc add data` "
                       "versions these bytes")
    assert sorted(p.name for p in (repo / "data" / "fashion-mnist").iterdir()) == sorted(FILES)
    assert (repo / "data.dvc").read_text() == (ROOT / "data.dvc").read_text()


def test_team_shares_data_through_a_dvc_remote(repo, tmp_path):
    assert main(["--root", str(repo)]) == 0
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "--default", "team", str(remote))
    dvc(repo, "push", "data.dvc")
    # A teammate's clone: same data.dvc and remote, no data and no cache.
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull", "data.dvc")
    for name in FILES:
        assert (repo / "data" / "fashion-mnist" / name).read_bytes() == (DEBIAN / name).read_bytes()
    assert "Data and pipelines are up to date." in dvc(repo, "status", "data.dvc")


def test_every_remote_docs_data_md_shows_has_an_extra_with_dvcs_own_plugin():
    """docs/data.md's remote schemes each install through an extra of pyproject.toml, and that extra is the package
    DVC itself asks for when the scheme is used without it (checked against the installed DVC's table)."""
    import re  # noqa: PLC0415
    import tomllib  # noqa: PLC0415

    from dvc_objects.fs import known_implementations  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    shown = set(re.findall(r"pip install -e '\.\[(\w+)\]'", (root / "docs" / "data.md").read_text()))
    assert shown >= {"s3", "gs", "azure", "ssh"}, shown
    for scheme in shown:
        wanted = re.search(r"requires '([\w-]+)'", known_implementations[scheme]["err"]).group(1)
        assert [re.split(r"[<>=]", r)[0] for r in extras[scheme]] == [wanted], (scheme, extras[scheme])


class Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return None


def test_a_download_is_placed_only_after_it_matches_its_published_md5(tmp_path, monkeypatch):
    """Downloads land in a hidden folder beside data/fashion-mnist, are checked, then renamed into place; one
    mismatch (or one file over the size cap) places none of them."""
    assert data.OFFICIAL.startswith("https://")
    payloads = {name: f"archive {name}".encode() for name in FILES}
    monkeypatch.setattr(data, "DEBIAN", tmp_path / "no-debian")
    monkeypatch.setattr(data, "PUBLISHED_MD5", {n: hashlib.md5(p, usedforsecurity=False).hexdigest()
                                                for n, p in payloads.items()})
    monkeypatch.setattr(data, "_open", lambda url, timeout: Response(payloads[url.rsplit("/", 1)[1]]))
    target = tmp_path / "data" / "fashion-mnist"
    payloads[FILES[-1]] = b"swapped on the way"
    with pytest.raises(DataFetchError, match=rf"{FILES[-1]}: expected the archive Zalando publishes \(md5 \w+\), "
                                             rf"found md5 \w+; nothing placed"):
        fetch(target)
    assert not list(target.iterdir()) and not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    payloads[FILES[-1]] = f"archive {FILES[-1]}".encode()
    monkeypatch.setattr(data, "MAX_DOWNLOAD", 10)
    with pytest.raises(DataFetchError, match=r"expected at most 10 bytes, found more; nothing placed"):
        fetch(target)
    assert not list(target.iterdir())
    monkeypatch.setattr(data, "MAX_DOWNLOAD", max(len(p) for p in payloads.values()))  # "at most": the cap passes
    assert all(line.endswith(f"downloaded from {data.OFFICIAL}{line.split(':')[0]}") for line in fetch(target))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == payloads


def test_files_that_fail_verification_are_removed_and_the_users_own_kept(repo, tmp_path, capsys):
    """Data that is not the version data.dvc records is not left in data/ for the next `dvc repro` to ingest: the
    files this run placed are removed; a file that was there before is the user's and stays."""
    source = tmp_path / "src"
    source.mkdir()
    for name in FILES:
        (source / name).write_bytes(f"not {name}".encode())
    kept = repo / "data" / "fashion-mnist" / FILES[0]
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"the user's own")
    record = (repo / "data.dvc").read_text()
    assert main(["--root", str(repo), "--source", str(source)]) == 1
    err = capsys.readouterr().err
    assert "expected the version recorded in data.dvc" in err
    assert f"removed the files this run placed: {', '.join(FILES[1:])}; kept, as they were there before: " \
           f"{FILES[0]}" in err
    assert [p.name for p in kept.parent.iterdir()] == [FILES[0]] and kept.read_bytes() == b"the user's own"
    assert (repo / "data.dvc").read_text() == record


def test_fetch_names_where_each_file_came_from_keeps_those_in_place_and_clears_a_killed_runs_staging(tmp_path):
    """``fetch`` returns each file's origin (``kept`` for one already in place, which stays as it is); the staging
    folder a killed run left beside the target (``.fashion-mnist.incoming.`` and mkdtemp's 8 characters) is removed,
    a folder of another name is not."""
    source = tmp_path / "src"
    source.mkdir()
    for name in FILES:
        (source / name).write_bytes(f"from src {name}".encode())
    target = tmp_path / "data" / "fashion-mnist"
    target.mkdir(parents=True)
    (target / FILES[0]).write_bytes(b"already here")
    killed = tmp_path / "data" / ".fashion-mnist.incoming.ab1_x9yz"
    killed.mkdir()
    (killed / FILES[1]).write_bytes(b"half a copy")
    (tmp_path / "data" / ".fashion-mnist.incoming.mine").mkdir()
    assert fetch(target, source) == [f"{FILES[0]}: kept"] + [f"{name}: copied from {source}" for name in FILES[1:]]
    assert (target / FILES[0]).read_bytes() == b"already here"
    assert all((target / name).read_bytes() == f"from src {name}".encode() for name in FILES[1:])
    assert sorted(p.name for p in target.parent.iterdir()) == [".fashion-mnist.incoming.mine", "fashion-mnist"]
    assert fetch(target, source) == [f"{name}: kept" for name in FILES]


@pytest.mark.parametrize("error", [urllib.error.URLError("no route to host"), TimeoutError("timed out")],
                         ids=["unreachable", "timeout"])
def test_a_download_that_fails_names_the_debian_package_and_source(tmp_path, monkeypatch, capsys, error):
    """No Debian package and no network: one error line that says what to install or pass, and nothing placed."""

    def unreachable(url, timeout):
        raise error

    monkeypatch.setattr(data, "DEBIAN", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_open", unreachable)
    assert main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"error: data: {FILES[0]}: not in Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) " \
           f"and the download from {data.OFFICIAL}{FILES[0]} failed ({error}); pass --source" in err
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_downloads_go_through_the_https_only_redirect_handler_with_the_timeout(monkeypatch):
    """``_open`` builds its opener with ``_HttpsOnly`` (a redirect to plain http refused) and passes the timeout."""
    import urllib.request  # noqa: PLC0415

    built = []

    class Opener:
        def __init__(self, *handlers):
            built.append(handlers)

        def open(self, url, timeout=None):
            built.append((url, timeout))
            return "response"

    monkeypatch.setattr(urllib.request, "build_opener", Opener)
    assert data._open("https://example.invalid/x.gz", 7) == "response"
    assert built == [(data._HttpsOnly,), ("https://example.invalid/x.gz", 7)]


def test_a_dvc_command_that_fails_is_named(repo, tmp_path, capsys):
    """``dvc commit`` failing (here: no DVC repository) fails ``make data`` naming the command, its exit status and
    DVC's own reason (``--quiet`` silenced it), and removes the files this run placed."""
    source = tmp_path / "src"
    source.mkdir()
    for name in FILES:
        (source / name).write_bytes(f"not {name}".encode())
    shutil.rmtree(repo / ".dvc")
    assert main(["--root", str(repo), "--source", str(source)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: data: dvc commit --force data\.dvc failed \(exit \d+\): ERROR: you are not inside of "
                     r"a DVC repository", err)
    assert f"removed the files this run placed: {', '.join(FILES)}" in err
    assert not list((repo / "data").rglob("*"))


def test_a_file_in_place_of_the_data_folder_is_one_error_line_naming_it(repo, capsys):
    """``main``: 0, or 1 with one error line on stderr; a file at data/fashion-mnist (an OSError, not a
    DataFetchError) is no traceback, and the file stays."""
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "fashion-mnist").write_text("not a folder")
    assert main(["--root", str(repo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: data: ") and err.count("\n") == 1 and "data/fashion-mnist" in err, err
    assert (repo / "data" / "fashion-mnist").read_text() == "not a folder"
