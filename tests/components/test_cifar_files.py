"""CIFAR-10 and CIFAR-10N files that are not what they promise: crafted pickles (which once reached numpy's C
reconstructors and crashed the process), batches whose labels do not match their rows, and CIFAR-10_human.pt
checked out by DVC as a link into its cache. A read that could crash runs in a child process, so that a segfault
fails its test instead of ending pytest."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import random
import re
import struct
import subprocess
import sys
import tarfile
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from components.common.errors import DataError
from components.formats.cifar import BATCHES, read_cifar10, read_cifar10n
from components.ingest import IngestConfig, human_labels_path, run
from tests.components.formats_fixtures import cifar_batch, cifar_meta, write_cifar10, write_cifar10n

ROOT = Path(__file__).resolve().parents[2]
# numpy's pickled dtype state (version 3, byte order, subarray, names, fields, elsize, alignment, flags) as
# pickle protocol 2 writes it from the byte order on: dropping two of its three Nones leaves 6 fields,
# (3, '|', None, -1, -1, 0), which numpy's C __setstate__ took and corrupted the dtype with (exit 139).
DTYPE_STATE = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
SIX_FIELDS = b"NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"


def read_in_child(source: Path, human: Path | None = None) -> subprocess.CompletedProcess:
    """``read_cifar10`` (or ``read_cifar10n``) in a child process: prints ``read`` or ``DataError: <message>`` and
    exits 0; any other exception exits 1 with its traceback; a crash is a negative return code."""
    code = ("import sys\nfrom pathlib import Path\nfrom components.common.errors import DataError\n"
            "from components.formats.cifar import read_cifar10, read_cifar10n\n"
            "try:\n"
            "    if len(sys.argv) > 2:\n"
            "        read_cifar10n(Path(sys.argv[1]), Path(sys.argv[2]))\n"
            "    else:\n"
            "        read_cifar10(Path(sys.argv[1]))\n"
            "    print('read')\n"
            "except DataError as err:\n"
            "    print(f'DataError: {err}')\n")
    return subprocess.run([sys.executable, "-c", code, str(source), *([str(human)] if human else [])],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def rewrite_pt(path: Path, change) -> None:
    """``CIFAR-10_human.pt`` with its ``data.pkl`` passed through ``change`` (the zip's other records kept)."""
    with zipfile.ZipFile(path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            archive.writestr(name, change(data) if name.endswith("/data.pkl") else data)


def six_field_dtype(pickled: bytes) -> bytes:
    assert DTYPE_STATE in pickled
    return pickled.replace(DTYPE_STATE, SIX_FIELDS, 1)


@pytest.mark.parametrize("member", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_crafted_dtype_state_in_a_batch_is_a_data_error_not_a_crash(tmp_path, member):
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    batch = source / "cifar-10-batches-py" / member
    if member == "batches.meta":  # the published meta has no array: one beside label_names is read all the same
        batch.write_bytes(pickle.dumps({**cifar_meta(), b"x": np.zeros((1, 4), np.uint8)}, protocol=2))
    batch.write_bytes(six_field_dtype(batch.read_bytes()))
    done = read_in_child(source)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith(f"DataError: {batch}: expected a pickled CIFAR-10 batch, found unreadable data "
                                  f"(numpy dtype "), done.stdout
    assert "expected a plain integer type" in done.stdout and done.stdout.count("\n") == 1


def test_a_crafted_dtype_state_in_the_tarball_is_a_data_error_not_a_crash(tmp_path):
    tarball = write_cifar10(tmp_path / "cifar", per_batch=2, tarball=True)
    with tarfile.open(tarball, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    files["cifar-10-batches-py/data_batch_2"] = six_field_dtype(files["cifar-10-batches-py/data_batch_2"])
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    done = read_in_child(tarball)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith(f"DataError: {tarball} (cifar-10-batches-py/data_batch_2): expected a pickled "
                                  f"CIFAR-10 batch, found unreadable data (numpy dtype "), done.stdout


def test_a_crafted_dtype_state_in_cifar10n_is_a_data_error_not_a_crash(tmp_path):
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    human = write_cifar10n(source / "CIFAR-10_human.pt", read_cifar10(source).train_labels)
    rewrite_pt(human, six_field_dtype)
    done = read_in_child(source, human)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith(f"DataError: {human} (CIFAR-10_human/data.pkl): expected a torch-saved dict of "
                                  f"label arrays, found unreadable data (numpy dtype "), done.stdout


@pytest.mark.parametrize(("array", "found"), [
    (np.zeros((2, 3072), np.float32), "numpy dtype ('f4', False, True)"),
    (np.array([[b"x"] * 3072] * 2, dtype=object), "numpy dtype ('O8', False, True)"),
], ids=["float32", "object"])
def test_an_array_of_any_other_dtype_is_refused_before_numpy_builds_it(tmp_path, array, found):
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    batch = source / "cifar-10-batches-py" / "data_batch_4"
    batch.write_bytes(pickle.dumps({**cifar_batch(2, np.random.default_rng(0)), b"data": array}, protocol=2))
    with pytest.raises(DataError, match=rf"data_batch_4: expected a pickled CIFAR-10 batch, found unreadable data "
                                        rf"\({re.escape(found)}"):
        read_cifar10(source)


def test_array_bytes_must_match_the_shape(tmp_path):
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    batch = source / "cifar-10-batches-py" / "data_batch_1"
    # the shape tuple (2, 3072): BININT1 2, BININT2 3072, TUPLE2; claim 3 rows of the 2 rows' bytes
    pickled = batch.read_bytes()
    assert pickled.count(b"K\x02M\x00\x0c\x86") == 1
    batch.write_bytes(pickled.replace(b"K\x02M\x00\x0c\x86", b"K\x03M\x00\x0c\x86"))
    with pytest.raises(DataError, match=r"data_batch_1: expected a pickled CIFAR-10 batch, found unreadable data "
                                        r"\(numpy array uint8 \[3, 3072\]: expected 9216 bytes of data, found 6144\)"):
        read_cifar10(source)


@pytest.mark.parametrize(("pickled", "found"), [
    (b"\x80\x05\x96" + struct.pack("<Q", 1 << 60) + b"abc", "expected 1152921504606846976 bytes in a bytearray8, "
                                                          "but only 3 remain"),
    (pickle.dumps({b"data": bytearray(b"abc")}, protocol=5), "opcode BYTEARRAY8 is not allowed"),
    (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc", "expected 1099511627776 bytes in a bytes8, but only 3 "
                                                          "remain"),
], ids=["bytearray8-of-an-exabyte", "protocol-5-bytearray", "bytes8-of-a-terabyte"])
def test_lengths_the_data_does_not_hold_never_reach_the_c_unpickler(tmp_path, pickled, found):
    """Pickle opcodes are parsed in Python first: a length of a terabyte is refused before anything allocates it."""
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    (source / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickled)
    with pytest.raises(DataError, match=rf"data_batch_2: expected a pickled CIFAR-10 batch, found unreadable data "
                                        rf"\({re.escape(found)}\)$"):
        read_cifar10(source)


def test_cifar10n_holding_torch_tensors_is_refused(tmp_path):
    """The published CIFAR-10_human.pt holds numpy arrays, which pickle themselves; a tensor is rebuilt by torch
    from a storage the pickle refers to, which the reader does not admit. Nor a file that is no zip archive."""
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    human = source / "CIFAR-10_human.pt"
    labels = torch.as_tensor(read_cifar10(source).train_labels)
    torch.save({key: labels for key in ("clean_label", "aggre_label", "worse_label", "random_label1",
                                        "random_label2", "random_label3")}, human)
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt \(CIFAR-10_human/data.pkl\): expected a torch-saved "
                                        r"dict of label arrays, found unreadable data \(global torch._utils."
                                        r"_rebuild_tensor_v2 is not allowed\)$"):
        read_cifar10n(source, human)
    human.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: expected a torch-saved dict of label arrays, found "
                                        r"unreadable data \(File is not a zip file\)$"):
        read_cifar10n(source, human)


def py2_pickle(value: object) -> bytes:
    """``value`` as Python 2's cPickle wrote it at protocol 2 with numpy 1.x, as the published CIFAR-10 batches
    are: str (bytes) as SHORT_BINSTRING/BINSTRING, arrays by ``numpy.core.multiarray._reconstruct``."""
    def text(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def integer(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    def tup(items: list[bytes]) -> bytes:
        return b"(" + b"".join(items) + b"t"

    def obj(v: object) -> bytes:
        if isinstance(v, np.ndarray):
            dtype = (b"cnumpy\ndtype\n" + tup([text(v.dtype.str[1:].encode()), integer(0), integer(1)]) + b"R"
                     + tup([integer(3), text(v.dtype.str[:1].encode()), b"N", b"N", b"N", integer(-1), integer(-1),
                            integer(0)]) + b"b")
            return (b"cnumpy.core.multiarray\n_reconstruct\n" + tup([b"cnumpy\nndarray\n", tup([integer(0)]),
                                                                    text(b"b")]) + b"R"
                    + tup([integer(1), tup([integer(d) for d in v.shape]), dtype, b"\x89", text(v.tobytes())]) + b"b")
        if isinstance(v, bytes):
            return text(v)
        if isinstance(v, int):
            return integer(v)
        if isinstance(v, list):
            return b"]" + (b"(" + b"".join(obj(x) for x in v) + b"e" if v else b"")
        raise TypeError(v)

    return b"\x80\x02}(" + b"".join(obj(k) + obj(v) for k, v in value.items()) + b"u."


def test_python_2_and_python_3_protocol_4_pickles_read_alike(tmp_path):
    """The published batches are Python 2 pickles (bytes keys, numpy.core.multiarray._reconstruct); a re-saved
    copy may be a Python 3 one at protocol 4 (opcodes STACK_GLOBAL and BINBYTES): both give the same arrays."""
    rng = np.random.default_rng(3)
    batches = {name: cifar_batch(3, rng, i) for i, name in enumerate((*BATCHES, "test_batch"))}
    read = {}
    for kind, dump in (("py2", py2_pickle), ("py3", lambda v: pickle.dumps(v, protocol=4))):
        folder = tmp_path / kind / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, batch in batches.items():
            (folder / name).write_bytes(dump(batch))
        (folder / "batches.meta").write_bytes(dump(cifar_meta()))
        read[kind] = read_cifar10(folder.parent)
    assert b"numpy.core.multiarray\n_reconstruct" in (tmp_path / "py2/cifar-10-batches-py/test_batch").read_bytes()
    rows = np.concatenate([batches[name][b"data"] for name in BATCHES])
    for dataset in read.values():
        assert dataset.class_names[:2] == ["airplane", "automobile"]
        assert (dataset.train_images == rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)).all()
        assert dataset.train_labels.tolist() == [x for name in BATCHES for x in batches[name][b"labels"]]
        assert dataset.test_labels.tolist() == batches["test_batch"][b"labels"]


def test_a_batch_with_fewer_labels_than_rows_is_named(tmp_path):
    source = write_cifar10(tmp_path / "cifar", per_batch=4)
    batch = source / "cifar-10-batches-py" / "data_batch_1"
    table = pickle.loads(batch.read_bytes(), encoding="bytes")
    batch.write_bytes(pickle.dumps({**table, b"labels": table[b"labels"][:3]}, protocol=2))
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))} \(data_batch_1\): expected 4 labels \(one per "
                                        rf"row of data\), found 3$"):
        read_cifar10(source)


def test_a_batch_label_out_of_range_is_named(tmp_path):
    source = write_cifar10(tmp_path / "cifar", per_batch=4, tarball=True)
    with tarfile.open(source, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    name = "cifar-10-batches-py/test_batch"
    table = pickle.loads(files[name], encoding="bytes")
    files[name] = pickle.dumps({**table, b"labels": [0, 10, 3, 2]}, protocol=2)
    with tarfile.open(source, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))} \(test_batch\): expected labels in \[0, 9\], "
                                        rf"found values from 0 to 10$"):
        read_cifar10(source)


def test_labels_that_are_not_integers_are_named(tmp_path):
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    batch = source / "cifar-10-batches-py" / "data_batch_5"
    table = pickle.loads(batch.read_bytes(), encoding="bytes")
    batch.write_bytes(pickle.dumps({**table, b"labels": [1, b"cat"]}, protocol=2))
    with pytest.raises(DataError, match=r"\(data_batch_5\): expected labels as a list of integers, found bytes$"):
        read_cifar10(source)
    batch.write_bytes(pickle.dumps({**table, b"labels": [1, True]}, protocol=2))  # a bool is no class index
    with pytest.raises(DataError, match=r"\(data_batch_5\): expected labels as a list of integers, found bool$"):
        read_cifar10(source)
    batch.write_bytes(pickle.dumps({**table, b"labels": np.array([[1], [2]])}, protocol=2))  # a column, not [N]
    with pytest.raises(DataError, match=r"\(data_batch_5\): expected labels as a 1-D array, found shape \[2, 1\]$"):
        read_cifar10(source)


def test_cifar10n_human_labels_checked_out_as_links_into_the_dvc_cache(tmp_path):
    """``dvc checkout`` with ``cache.type: symlink``: every file a link into ``.dvc/cache``, which readers follow;
    CIFAR-10_human.pt too. A link leading anywhere else is refused, naming where it leads."""
    repo = tmp_path / "repo"
    source = write_cifar10(repo / "data" / "cifar10n", per_batch=2)
    cache = repo / ".dvc" / "cache" / "files" / "md5" / "3f"
    cache.mkdir(parents=True)
    write_cifar10n(cache / "0a1b2c", read_cifar10(source).train_labels)
    (source / "CIFAR-10_human.pt").symlink_to(os.path.relpath(cache / "0a1b2c", source))
    config = IngestConfig(dataset="cifar10n", path=str(source), human_labels="CIFAR-10_human.pt")
    assert human_labels_path(config) == source / "CIFAR-10_human.pt"
    run(config, out=tmp_path / "out")
    with np.load(tmp_path / "out" / "human_labels.npz") as table:
        assert (table["aggre_label"] == read_cifar10(source).train_labels).all()

    elsewhere = write_cifar10n(tmp_path / "CIFAR-10_human.pt", read_cifar10(source).train_labels)
    (source / "CIFAR-10_human.pt").unlink()
    (source / "CIFAR-10_human.pt").symlink_to(elsewhere)
    with pytest.raises(DataError, match=rf"^ingest.human_labels: expected a file inside {re.escape(str(source))} "
                                        rf"\(ingest.path, which DVC tracks\), found 'CIFAR-10_human.pt', a symbolic "
                                        rf"link to {re.escape(str(elsewhere))}; put CIFAR-10_human.pt beside the "
                                        rf"CIFAR-10 files$"):
        human_labels_path(config)
    for name in ("../CIFAR-10_human.pt", str(elsewhere)):  # names that climb out, or absolute ones
        with pytest.raises(DataError, match=rf"^ingest.human_labels: expected a file inside .*, found "
                                            rf"{re.escape(repr(name))}; put CIFAR-10_human.pt beside"):
            human_labels_path(IngestConfig(dataset="cifar10n", path=str(source), human_labels=name))


def mutants(pickled: bytes, count: int, rng: random.Random) -> list[bytes]:
    """``count`` copies of ``pickled``, each with 1 to 3 changes where the structure is: at an opcode or the first
    bytes of its argument (its length, its value), a byte replaced, removed or inserted (an opcode, often)."""
    starts = [pos for _, arg, pos in pickletools.genops(pickled)]
    out = []
    for _ in range(count):
        data = bytearray(pickled)
        for _ in range(rng.randint(1, 3)):
            pos = min(rng.choice(starts) + rng.randint(0, 5), len(data) - 1)
            kind = rng.random()
            if kind < 0.5:
                data[pos] = rng.choice((rng.randrange(256), *b"NKJ()tRb.h\x85\x86\x87X"))
            elif kind < 0.8:
                del data[pos:pos + rng.randint(1, 2)]
            else:
                data[pos:pos] = bytes([rng.choice(b"NKJ()tRbe]}\x85\x86\x87")])
        out.append(bytes(data))
    return out


def fuzz(folder: str) -> None:
    """Run in a child: read a tiny CIFAR-10 (and CIFAR-10N) whose data_batch_1, batches.meta or
    CIFAR-10_human.pt's data.pkl is a mutant; print the count of each outcome, or exit 1 at the first that is
    neither a read nor a DataError (a crash ends the child on its own)."""
    source = Path(folder)
    batch, meta = source / "cifar-10-batches-py" / "data_batch_1", source / "cifar-10-batches-py" / "batches.meta"
    human = source / "CIFAR-10_human.pt"
    with zipfile.ZipFile(human) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        table = archive.read(name)
    rng = random.Random(20240601)
    cases = [(batch, m) for m in mutants(batch.read_bytes(), 250, rng)]
    cases += [(meta, m) for m in mutants(meta.read_bytes(), 100, rng)]
    cases += [(human, m) for m in mutants(table, 150, rng)]
    originals = {path: path.read_bytes() for path in (batch, meta, human)}
    outcomes = {"read": 0, "DataError": 0}
    for i, (path, data) in enumerate(cases):
        if path == human:
            path.write_bytes(originals[human])
            rewrite_pt(path, lambda _, data=data: data)
        else:
            path.write_bytes(data)
        try:
            read_cifar10n(source, human)
            outcomes["read"] += 1
        except DataError as err:
            assert "\n" not in str(err) and str(source) in str(err) and len(str(err)) < 600, str(err)
            outcomes["DataError"] += 1
        except BaseException:
            print(f"mutant {i} of {path.name}: {data!r}", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        path.write_bytes(originals[path])
    print(json.dumps(outcomes))


def test_mutated_pickles_are_read_or_refused_never_a_crash(tmp_path):
    """A few hundred deterministic mutants of tiny valid files: every one is read or a one-line DataError naming
    the dataset's files; none crashes the process or escapes as another exception."""
    source = write_cifar10(tmp_path / "cifar", per_batch=1)
    write_cifar10n(source / "CIFAR-10_human.pt", read_cifar10(source).train_labels)
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom tests.components.test_cifar_files import fuzz\n"
                           "fuzz(sys.argv[1])", str(source)], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    outcomes = json.loads(done.stdout)
    assert outcomes["read"] + outcomes["DataError"] == 500 and outcomes["DataError"] > 250, outcomes
