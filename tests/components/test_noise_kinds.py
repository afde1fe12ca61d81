"""Every noise kind: realised rates within a binomial tolerance, exact maps, determinism, the step's outputs."""

import json
import pickle

import numpy as np
import pytest
import torch
from scipy import stats

from components.formats.cifar import read_cifar10
from components.formats.idx import FASHION_MNIST_CLASSES
from components.ingest import IngestConfig
from components.ingest import run as ingest
from components.noise import (
    BUILTIN_MAPS,
    NoiseConfig,
    _class_map,
    corrupt,
    designed_transition,
    majority_warning,
    overrun_classes,
    parse_class_map,
    run,
    superclass_map,
    transition_matrix,
)
from tests.components.formats_fixtures import (
    CIFAR100_SUPERCLASSES,
    write_cifar10,
    write_cifar10n,
    write_cifar100,
    write_cifar100n,
    write_distinct_image,
    write_image,
)

N = 40_000


def tolerance(p, n=N):
    return 5.0 * np.sqrt(max(p * (1 - p), 1e-4) / n)


@pytest.fixture(scope="module")
def clean():
    return np.random.default_rng(1).integers(0, 10, N)


def realised(clean, **kw):
    noisy = corrupt(clean, num_classes=10, rng=np.random.default_rng(0), **kw)
    return noisy, (noisy != clean).mean()


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_symmetric_uniform_other_pairflip_rates(clean, rate):
    for kind, expected in (("symmetric", rate * 0.9), ("uniform_other", rate), ("pairflip", rate)):
        _, got = realised(clean, kind=kind, rate=rate)
        assert abs(got - expected) <= tolerance(expected), (kind, got, expected)


def test_pairflip_moves_every_flipped_label_to_the_next_class(clean):
    noisy, _ = realised(clean, kind="pairflip", rate=0.4)
    changed = noisy != clean
    assert ((clean[changed] + 1) % 10 == noisy[changed]).all()


def test_asymmetric_map_applied_exactly_and_at_the_rate(clean):
    table = parse_class_map(BUILTIN_MAPS["fashion-mnist"], list(FASHION_MNIST_CLASSES))
    assert table == {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9, 9: 7}
    noisy, got = realised(clean, kind="asymmetric", rate=0.4, class_map=table)
    changed = noisy != clean
    assert all(table[c] == n for c, n in zip(clean[changed], noisy[changed], strict=True))
    assert not changed[np.isin(clean, [1, 3, 8])].any()
    mapped_share = np.isin(clean, list(table)).mean()
    assert abs(got - 0.4 * mapped_share) <= tolerance(0.4 * mapped_share)


def test_a_class_mapped_to_two_targets_is_refused():
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with pytest.raises(ValueError, match=r"class_map: expected one target per class, found 'cat' mapped to 'dog' "
                                         r"and to 'bird' \('cat->bird'\)"):
        parse_class_map(["cat->dog", "cat->bird"], names)
    assert parse_class_map(["cat->dog", "3->5"], names) == {3: 5}  # the same pair twice is one


def test_a_class_index_in_other_digits_is_no_index():
    names = ["airplane", "automobile", "bird", "cat"]
    with pytest.raises(ValueError) as err:
        parse_class_map(["\u00b2->1"], names)  # str.isdigit() says yes; int() refuses it
    assert str(err.value) == ("class_map: '\u00b2->1': expected a class name or index of this dataset (airplane, "
                              "automobile, bird, cat), found '\u00b2'")


def test_cifar10_builtin_map():
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert parse_class_map(BUILTIN_MAPS["cifar10"], names) == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def test_cifar100_map_flips_within_each_superclass_to_the_next():
    pairs = superclass_map(CIFAR100_SUPERCLASSES)
    assert len(pairs) == 100 and pairs[:5] == ["beaver->dolphin", "dolphin->otter", "otter->seal", "seal->whale",
                                               "whale->beaver"]
    assert superclass_map(None) == [] and superclass_map({"solo": ["a"], "pair": ["b", "c"]}) == ["b->c", "c->b"]


def test_asymmetric_noise_on_cifar100_stays_within_superclasses(tmp_path):
    """The built-in map comes from the superclasses ingest recorded: every flipped label is the next class of its
    image's superclass, and every class is mapped (realised rate about r, no class kept)."""
    ingest(IngestConfig(dataset="cifar100", path=str(write_cifar100(tmp_path / "c100", per_class=20))),
           out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="asymmetric", rate=0.5, train_size=0), ingest=tmp_path / "ingest",
                  out=tmp_path / "noise")
    names = json.loads((tmp_path / "ingest" / "manifest.json").read_text())["class_names"]
    following = {a: fine[(i + 1) % 5] for fine in CIFAR100_SUPERCLASSES.values() for i, a in enumerate(fine)}
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        train = ~f["is_val"]
        clean, given = f["clean_label"][train], f["label"][train]
    flipped = clean != given
    assert all(following[names[c]] == names[g] for c, g in zip(clean[flipped], given[flipped], strict=True))
    assert len(set(clean[flipped].tolist())) > 80  # flips come from (nearly) every class, not a few mapped ones
    assert abs(summary["realised_rate_train"] - 0.5) <= tolerance(0.5, n=int(train.sum()))


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.4, 0.9])
def test_instance_noise_rate_and_dependence_on_the_image(clean, rate):
    rng = np.random.default_rng(5)
    templates = rng.integers(0, 256, (10, 8, 8, 1))
    images = np.clip(templates[clean] + rng.normal(0, 20, (N, 8, 8, 1)), 0, 255).astype(np.uint8)
    noisy, got = realised(clean, kind="instance", rate=rate, images=images)
    # the flip rates are N(r, 0.1^2) truncated to [0, 1]: their mean is r from 0.2 on, above r below it
    expected = stats.truncnorm.mean(-rate / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1)
    assert abs(got - expected) <= tolerance(expected)
    assert (rate == 0.05) == (expected > rate + 0.04)
    # Feature dependence: within a class, flips concentrate on a few target classes (uniform noise would not).
    flipped = noisy[(clean == 0) & (noisy != clean)]
    top_share = np.bincount(flipped, minlength=10).max() / flipped.size
    assert top_share > 2 / 9


def test_rate_zero_resamples_no_label_under_every_synthetic_kind(clean):
    """``rate`` is the probability that a label is resampled (NoiseConfig): 0 changes none, also under instance
    noise, whose per-sample flip rates N(r, 0.1^2) truncated to [0, 1] would otherwise average 0.08 at r = 0."""
    images = np.random.default_rng(5).integers(0, 256, (N, 4, 4, 1)).astype(np.uint8)
    for kind in ("symmetric", "uniform_other", "pairflip", "instance"):
        _, got = realised(clean, kind=kind, rate=0.0, images=images)
        assert got == 0.0, kind


def test_instance_noise_draws_one_projection_per_clean_class(clean):
    """As in Xia et al.'s code, W[y]: with every image the same, each class still sends its wrong labels to classes
    of its own. One projection shared by all classes would send every class's to the same one or two classes."""
    images = np.full((N, 8, 8, 1), 128, dtype=np.uint8)
    noisy, _ = realised(clean, kind="instance", rate=0.4, images=images)
    changed = noisy != clean
    favourite = [np.bincount(noisy[changed & (clean == c)], minlength=10).argmax() for c in range(10)]
    assert len(set(favourite)) >= 4, favourite
    # softmax(x W[y]) with x in [0, 1], not an argmax: a class's wrong labels go to more than one class
    assert all(len(set(noisy[changed & (clean == c)].tolist())) >= 3 for c in range(10))


def test_same_seed_same_labels_other_seed_different(clean):
    for kind in ("symmetric", "uniform_other", "pairflip"):
        a = corrupt(clean, kind=kind, rate=0.5, num_classes=10, rng=np.random.default_rng(3))
        b = corrupt(clean, kind=kind, rate=0.5, num_classes=10, rng=np.random.default_rng(3))
        c = corrupt(clean, kind=kind, rate=0.5, num_classes=10, rng=np.random.default_rng(4))
        assert (a == b).all() and (a != c).any(), kind


@pytest.mark.parametrize("kind", ["symmetric", "uniform_other", "pairflip", "asymmetric"])
def test_the_designed_transition_matrix_is_the_one_drawn_from(clean, kind):
    """``designed_transition`` (what the majority warning judges) is each kind's matrix: the realised one of 40,000
    labels agrees with it entry by entry within sampling error."""
    table = parse_class_map(BUILTIN_MAPS["fashion-mnist"], list(FASHION_MNIST_CLASSES))
    designed = designed_transition(kind, 0.4, 10, table)
    noisy, _ = realised(clean, kind=kind, rate=0.4, class_map=table)
    assert np.allclose(designed.sum(axis=1), 1.0)
    assert np.abs(transition_matrix(clean, noisy, 10) - designed).max() <= tolerance(0.4, N // 10)


def test_overrun_classes_names_each_class_whose_clean_label_is_not_the_most_common():
    matrix = np.array([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.1, 0.7, 0.2]])
    assert overrun_classes(matrix, ["a", "b", "c"]) == ["b (0.50 kept, 0.50 to a)", "c (0.20 kept, 0.70 to b)"]
    assert overrun_classes(np.zeros((2, 2)), ["a", "b"]) == []  # no known clean label: nothing to judge


def test_noise_that_makes_a_wrong_label_the_majority_warns_by_the_kinds_design(tmp_path, fashion_dir, capsys):
    """pairflip at 0.5 ties every class with the next one: a warning in the summary and on stderr, naming the
    classes and the bound; at 0.45 none, though a small sample's realised rows may tip over (sampling, not design)."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="pairflip", rate=0.5, train_size=0), ingest=tmp_path / "ingest",
                  out=tmp_path / "noise")
    assert summary["majority_warning"] == (
        "the clean label is not the most common given label (drawn by kind pairflip at rate 0.5) of 10 of 10 "
        "classes: T-shirt/top (0.50 kept, 0.50 to Trouser); Trouser (0.50 kept, 0.50 to Pullover); Pullover (0.50 "
        "kept, 0.50 to Dress); and 7 more: no method can learn these classes from the labels (kind pairflip keeps "
        "the clean label the most common below rate 0.5)")
    assert f"WARNING: {summary['majority_warning']}" in capsys.readouterr().err
    for kind, rate in (("pairflip", 0.45), ("symmetric", 0.8), ("asymmetric", 0.45)):
        summary = run(NoiseConfig(kind=kind, rate=rate, train_size=0), ingest=tmp_path / "ingest",
                      out=tmp_path / "noise")
        assert "majority_warning" not in summary, kind


def test_instance_noise_gives_the_wrong_classes_the_whole_flip_rate(clean):
    """The wrong classes share q by softmax over the other classes (the true class excluded), so the realised rate is
    the truncated normal's mean also where the projections' scores are small (one-pixel images)."""
    images = np.random.default_rng(5).integers(0, 256, (N, 1, 1, 1)).astype(np.uint8)
    _, got = realised(clean, kind="instance", rate=0.4, images=images)
    expected = stats.truncnorm.mean(-4.0, 6.0, loc=0.4, scale=0.1)
    assert abs(got - expected) <= tolerance(expected)


def test_cifar10n_uses_the_cifar10_built_in_map():
    """CIFAR-10N is CIFAR-10's images: asymmetric noise on it uses CIFAR-10's built-in map."""
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert _class_map(NoiseConfig(kind="asymmetric"), {"dataset": "cifar10n", "class_names": names}) == \
        {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def test_the_majority_warning_counts_every_class_it_does_not_name():
    """Three classes are named, the rest counted: four overrun classes say "and 1 more"."""
    names = [str(i) for i in range(6)]
    config = NoiseConfig(kind="asymmetric", rate=0.5, class_map=("0->1", "1->2", "2->3", "3->4"))
    warning = majority_warning(config, {"dataset": "mine", "class_names": names}, np.eye(6))
    assert "of 4 of 6 classes: " in warning and "; and 1 more: no method can learn" in warning
    assert warning.endswith("(kind asymmetric keeps the clean label the most common below rate 0.5)")
    other = majority_warning(NoiseConfig(kind="uniform_other", rate=0.7), {"dataset": "mine", "class_names": names[:4]},
                             np.eye(4))  # docs/data.md: uniform_other warns at r >= (K-1)/K
    assert other is None
    other = majority_warning(NoiseConfig(kind="uniform_other", rate=0.75), {"dataset": "mine",
                                                                            "class_names": names[:4]}, np.eye(4))
    assert other.endswith("(kind uniform_other keeps the clean label the most common below rate (K-1)/K)")


def test_bad_class_maps():
    with pytest.raises(ValueError, match=r"class_map: expected 'source->target', found 'cat:dog'"):
        parse_class_map(["cat:dog"], ["cat", "dog"])
    with pytest.raises(ValueError, match=r"class_map: 'cat->wolf': expected a class name or index of this dataset "
                                         r"\(cat, dog\), found 'wolf'"):
        parse_class_map(["cat->wolf"], ["cat", "dog"])
    with pytest.raises(ValueError, match=r"class_map: 'cat->2': expected a class name or index of this dataset "
                                         r"\(cat, dog\), found '2'"):  # indices run from 0 to K - 1
        parse_class_map(["cat->2"], ["cat", "dog"])


def test_human_labels_from_cifar10n(tmp_path):
    source = write_cifar10(tmp_path / "cifar", per_batch=20)
    clean = read_cifar10(source).train_labels
    human = write_cifar10n(source / "CIFAR-10_human.pt", clean)
    ingest(IngestConfig(dataset="cifar10n", path=str(source)), out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="human", human_labels="worse_label", val_fraction=0.2, val_clean=False),
                  ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        worse = np.asarray(torch.load(human, weights_only=False)["worse_label"])[f["index"]]
        assert (f["label"] == worse).all()
        assert summary["realised_rate_train"] == pytest.approx(f["is_noisy"][~f["is_val"]].mean())
    assert summary["requested_rate"] is None  # kind human does not read noise.rate
    # worse_label here is uniform over the classes: judged by the realised matrix, no bound for kind human
    assert "given label (realised) of " in summary["majority_warning"]
    assert "keeps the clean label" not in summary["majority_warning"]
    run(NoiseConfig(kind="human", human_labels="worse_label", train_size=40), ingest=tmp_path / "ingest",
        out=tmp_path / "noise")  # a subset: each row keeps its own image's annotation
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        worse = np.asarray(torch.load(human, weights_only=False)["worse_label"])[f["index"]]
        assert f["index"].size == 40 and (f["label"][~f["is_val"]] == worse[~f["is_val"]]).all()


def test_human_labels_from_cifar100n(tmp_path):
    """CIFAR-100N's noisy_label, the one label set it has: other names are refused naming it."""
    source = write_cifar100(tmp_path / "c100", per_class=4)
    published = pickle.loads((source / "cifar-100-python" / "train").read_bytes(), encoding="bytes")
    clean, coarse = np.array(published[b"fine_labels"]), np.array(published[b"coarse_labels"])
    human = write_cifar100n(source / "CIFAR-100_human.pt", clean, coarse)
    ingest(IngestConfig(dataset="cifar100n", path=str(source), human_labels="CIFAR-100_human.pt"),
           out=tmp_path / "ingest")
    with pytest.raises(ValueError, match=r"^human_labels: expected one of cifar100n's label sets \(noisy_label\), "
                                         r"found 'aggre_label'$"):
        run(NoiseConfig(kind="human"), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    summary = run(NoiseConfig(kind="human", human_labels="noisy_label", train_size=0), ingest=tmp_path / "ingest",
                  out=tmp_path / "noise")
    noisy = np.asarray(torch.load(human, weights_only=False)["noisy_label"])
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        train = ~f["is_val"]  # the held-out rows keep their clean labels (val_clean)
        assert (f["label"][train] == noisy[f["index"]][train]).all() and (f["clean_label"] == clean[f["index"]]).all()
        assert summary["realised_rate_train"] == pytest.approx(f["is_noisy"][~f["is_val"]].mean())
    assert 0.25 < summary["realised_rate_train"] < 0.5  # 40 % moved, a hundredth of them to their own class


def test_human_kind_without_human_labels(tmp_path, fashion_dir):
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    with pytest.raises(ValueError, match=r"human_labels.npz: expected human labels for noise kind 'human' "
                                         r"\(ingest dataset cifar10n, cifar100n or clothing1m\), found no such file"):
        run(NoiseConfig(kind="human"), ingest=tmp_path / "ingest", out=tmp_path / "noise")


def test_asymmetric_on_a_dataset_without_a_builtin_map(tmp_path):
    for i in range(6):
        write_image(tmp_path / "mine" / ("a" if i % 2 else "b") / f"{i}.png", (4, 4), (50 * i,) * 3)  # distinct images
    ingest(IngestConfig(dataset="imagefolder", path=str(tmp_path / "mine")), out=tmp_path / "ingest")
    with pytest.raises(ValueError, match=r"class_map: expected source->target pairs for asymmetric noise on "
                                         r"imagefolder, which has no built-in map; found none"):
        run(NoiseConfig(kind="asymmetric", val_fraction=0.5), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    summary = run(NoiseConfig(kind="asymmetric", rate=1.0, class_map=("a->b",), val_fraction=0.5),
                  ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert summary["kind"] == "asymmetric"


def own_folder(root, *, val: bool):
    for i in range(24):
        split = "val" if val and i >= 20 else "train"
        write_distinct_image(root / split / ("a" if i % 2 else "b") / f"{i}.png", i)  # no two held out together
    return root


def test_a_users_labels_with_their_own_clean_val_split(tmp_path, capsys):
    """The val/ folder is the validation set: nothing is held out of the training labels, whose truth is unknown
    under kind none (clean_label -1, no noise rate), and no warning is printed."""
    ingest(IngestConfig(dataset="imagefolder", path=str(own_folder(tmp_path / "mine", val=True)), test_fraction=0.25),
           out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="none"), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert summary["val_source"] == "the dataset's val split" and summary["val_clean"] is True
    assert summary["val"] == 4 and summary["train"] == 15 and summary["labels"] == "as given"
    assert summary["clean_label_known_train"] == 0 and summary["realised_rate_train"] is None
    assert summary["requested_rate"] is None  # kind none does not read noise.rate (0.5 by default)
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        assert not f["is_val"].any() and (f["clean_label"] == -1).all() and not f["is_noisy"].any()
    assert "WARNING" not in capsys.readouterr().err and "warning" not in summary
    # no clean label is known: the transition matrix is all zeros (no NaN from an empty row)
    assert json.loads((tmp_path / "noise" / "transition.json").read_text()) == [[0.0, 0.0], [0.0, 0.0]]


def test_a_class_map_replaces_the_built_in_one(tmp_path, fashion_dir):
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    run(NoiseConfig(kind="asymmetric", rate=1.0, class_map=("Trouser->Bag",), train_size=0, val_fraction=0.1),
        ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        train = ~f["is_val"]
        clean, label = f["clean_label"][train], f["label"][train]
    assert (label[clean == 1] == 8).all() and (label[clean != 1] == clean[clean != 1]).all()


def test_instance_noise_in_the_step_reads_the_images_of_the_rows_it_corrupts(tmp_path, fashion_dir, monkeypatch):
    """On a subset (train_size), each label is corrupted from its own image, not another row's."""
    from components import noise  # noqa: PLC0415

    seen = {}

    def spy(labels, **kw):
        seen.update(kw, labels=labels.copy())
        return corrupt(labels, **kw)

    monkeypatch.setattr(noise, "corrupt", spy)
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    run(NoiseConfig(kind="instance", rate=0.3, train_size=100), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f, np.load(tmp_path / "ingest" / "train.npz") as t:
        np.testing.assert_array_equal(seen["images"], t["images"][f["index"]])
        np.testing.assert_array_equal(seen["labels"], t["labels"][f["index"]])


def test_a_users_labels_without_a_clean_val_split_warn_loudly(tmp_path, capsys):
    ingest(IngestConfig(dataset="imagefolder", path=str(own_folder(tmp_path / "mine", val=False)), test_fraction=0.25),
           out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="none", val_fraction=0.2), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert summary["val_source"] == "held out of the training images" and summary["val_clean"] is False
    assert summary["warning"].startswith("no clean validation set: the validation labels are as noisy as the training")
    assert "WARNING: no clean validation set" in capsys.readouterr().err
    with np.load(tmp_path / "noise" / "labels.npz") as f:  # the held-out labels stay as given: no truth to restore
        assert f["is_val"].sum() == 4 and (f["label"] >= 0).all()
    assert summary["realised_rate_val"] is None  # no clean label known among the held-out rows: no rate
    synthetic = run(NoiseConfig(kind="symmetric", rate=0.5, val_fraction=0.2), ingest=tmp_path / "ingest",
                    out=tmp_path / "noise")  # a study: the given labels are the truth the noise is injected into
    assert synthetic["val_clean"] is True and synthetic["clean_label_known_train"] == synthetic["train"]


@pytest.fixture(scope="module")
def clothing1m_ingest(tmp_path_factory):
    from benchmarks.fixtures import write_clothing1m  # noqa: PLC0415

    work = tmp_path_factory.mktemp("c1m")
    source = write_clothing1m(work / "src", per_split=6, train=60, noise_rate=0.4)
    ingest(IngestConfig(dataset="clothing1m", path=str(source), image_size=16, resize=20, shard_size=16),
           out=work / "ingest")
    return work / "ingest"


@pytest.mark.parametrize("kind", ["human", "none"])
def test_human_and_none_on_clothing1m_keep_the_published_labels_and_measure_them_where_clean_is_known(
        clothing1m_ingest, tmp_path, kind):
    """docs/data.md: kinds none and human on Clothing1M count the rows whose clean label is known."""
    from components.formats.webdataset import read_index  # noqa: PLC0415

    summary = run(NoiseConfig(kind=kind), ingest=clothing1m_ingest, out=tmp_path)
    index = read_index(clothing1m_ingest, "train")
    with np.load(tmp_path / "labels.npz") as table:
        labels = dict(table)
    np.testing.assert_array_equal(labels["label"], index.label[labels["index"]])  # the published noisy labels
    np.testing.assert_array_equal(labels["clean_label"], index.clean_label[labels["index"]])
    known = labels["clean_label"] >= 0
    assert not labels["is_val"].any() and not labels["is_noisy"][~known].any()  # the val split is the dataset's
    assert summary["clean_label_known_train"] == int(known.sum()) == 30
    assert summary["realised_rate_train"] == pytest.approx(labels["is_noisy"][known].mean())
    assert summary["realised_rate_train"] > 0  # the web labels are noisy
    assert (summary["val"], summary["val_source"]) == (6, "the dataset's val split")


def test_val_clean_false_does_not_touch_a_datasets_own_clean_val_split(clothing1m_ingest, tmp_path, capsys):
    """val_clean applies to the rows the noise step holds out: Clothing1M's own val split stays clean, no warning."""
    summary = run(NoiseConfig(kind="human", val_clean=False), ingest=clothing1m_ingest, out=tmp_path)
    assert summary["val_clean"] is True and "warning" not in summary
    assert "no clean validation set" not in capsys.readouterr().err


def test_synthetic_kinds_on_shards_corrupt_the_ingested_labels(clothing1m_ingest, tmp_path):
    from components.formats.webdataset import read_index  # noqa: PLC0415

    run(NoiseConfig(kind="pairflip", rate=1.0), ingest=clothing1m_ingest, out=tmp_path)
    ingested = read_index(clothing1m_ingest, "train").label
    with np.load(tmp_path / "labels.npz") as table:
        np.testing.assert_array_equal(table["label"], (ingested[table["index"]] + 1) % 14)


def test_instance_noise_on_shards_is_refused_with_the_reason(clothing1m_ingest, tmp_path):
    with pytest.raises(ValueError, match="instance noise reads every image's pixels, which a sharded dataset "
                                         r"\(clothing1m\) does not hold in memory"):
        run(NoiseConfig(kind="instance"), ingest=clothing1m_ingest, out=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_class_map_the_dataset_cannot_follow_is_a_config_error():
    """What the params get wrong about the classes is a ``ConfigError`` (the step's exit 2), not a data error: a
    class the dataset lacks, two targets for one class, or no map where the dataset has no built-in one."""
    from components.common.config import ConfigError  # noqa: PLC0415

    names = ["cat", "dog"]
    for pairs, message in ((["cat->wolf"], "expected a class name or index of this dataset"),
                           (["cat->dog", "0->0"], "expected one target per class"),
                           (["cat"], "expected 'source->target'")):
        with pytest.raises(ConfigError, match=message):
            parse_class_map(pairs, names)
    with pytest.raises(ConfigError, match="which has no built-in map; found none"):
        _class_map(NoiseConfig(kind="asymmetric"), {"dataset": "imagefolder", "class_names": names})
