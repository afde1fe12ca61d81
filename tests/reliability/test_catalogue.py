"""docs/reliability.md lists exactly the faults the tests run, with their outcomes."""

from tests.reliability import catalogue, test_attacks
from tests.reliability.attacks import ATTACKS
from tests.reliability.cases import CASES


def test_the_catalogue_is_up_to_date():
    text = catalogue.DOC.read_text()
    assert catalogue.update(text) == text, "run python -m tests.reliability.catalogue --write"


def test_every_case_is_one_row_and_the_ids_are_unique():
    text = catalogue.DOC.read_text()
    assert len({c.id for c in CASES}) == len(CASES) >= 25
    for case in CASES:
        assert text.count(f"| `{case.id}` |") == 1, case.id


def test_every_attack_class_names_a_test_that_tries_it():
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)
    for attack in ATTACKS:
        assert callable(getattr(test_attacks, attack.test, None)), f"{attack.id}: no test_attacks.{attack.test}"
    kinds = [a.kind for a in ATTACKS]
    assert kinds == sorted(kinds, key=list(dict.fromkeys(kinds)).index), "list the attacks of a kind together"
