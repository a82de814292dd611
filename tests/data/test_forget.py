import numpy as np
import pytest

from unlearnkit.data.forget import ForgetSpec, make_task, select_forget
from unlearnkit.errors import ConfigError, EmptySelection, TaskError


def test_random_fraction(digits):
    ids = select_forget(digits.train, ForgetSpec("random", fraction=0.1), np.random.default_rng(0))
    assert len(ids) == round(0.1 * len(digits.train)) and len(set(ids)) == len(ids)
    again = select_forget(digits.train, ForgetSpec("random", fraction=0.1), np.random.default_rng(0))
    assert np.array_equal(ids, again)


def test_classes(digits):
    ids = select_forget(digits.train, ForgetSpec("classes", classes=(3, 5)), np.random.default_rng(0), 10)
    labels = digits.train.labels[digits.train.positions_of(ids)]
    assert set(labels) == {3, 5}
    assert len(ids) == int(np.isin(digits.train.labels, [3, 5]).sum())


def test_class_out_of_range(digits):
    with pytest.raises(TaskError, match=r"class id\(s\) \[10\] out of range \[0, 10\)"):
        select_forget(digits.train, ForgetSpec("classes", classes=(10,)), np.random.default_rng(0), 10)


def test_id_file(tmp_path, digits):
    f = tmp_path / "ids.txt"
    f.write_text("# forget these\n0, 1\n2\n")
    task = make_task("d", digits.train, digits.test, ForgetSpec("ids", file=str(f)), np.random.default_rng(0), n_classes=10)
    assert sorted(task.forget.ids) == [0, 1, 2]
    f.write_text("0\nabc\n")
    with pytest.raises(ConfigError, match=r"ids.txt:2: 'abc' is not an integer"):
        select_forget(digits.train, ForgetSpec("ids", file=str(f)), np.random.default_rng(0))


def test_unknown_ids_and_empty(digits):
    with pytest.raises(TaskError, match="not in split"):
        make_task("d", digits.train, digits.test, ForgetSpec("ids", ids=(0, 10**9)), np.random.default_rng(0), n_classes=10)
    with pytest.raises(EmptySelection):
        select_forget(digits.train, ForgetSpec("ids", ids=()), np.random.default_rng(0))
    with pytest.raises(EmptySelection, match="nothing would be retained"):
        select_forget(digits.train, ForgetSpec("random", count=len(digits.train)), np.random.default_rng(0))


def test_spec_unknown_key():
    with pytest.raises(ConfigError, match="Unknown key 'fractoin'.*Did you mean: fraction"):
        ForgetSpec.from_dict({"kind": "random", "fractoin": 0.1})


@pytest.mark.parametrize("spec,message", [
    ({"kind": "ids", "ids": "13"}, "ids: expected a list, got '13'"),
    ({"kind": "ids", "ids": [1.9, 2.2]}, "ids: expected an integer, got 1.9"),
    ({"kind": "random", "count": 2.5}, "count: expected an integer, got 2.5"),
    ({"kind": "classes", "classes": [True]}, "classes: expected an integer, got True"),
    ({"kind": "random", "fraction": "ten percent"}, "fraction: expected a number"),
])
def test_spec_values_of_the_wrong_type_are_refused_not_misread(spec, message):
    with pytest.raises(ConfigError, match=message):
        ForgetSpec.from_dict(spec)


def test_spec_single_numbers_and_numpy_values_read_as_plain_lists():
    assert ForgetSpec.from_dict({"kind": "ids", "ids": 13}).ids == (13,)
    assert ForgetSpec.from_dict({"kind": "classes", "classes": 3}).classes == (3,)
    spec = ForgetSpec("profiles", fraction=np.float64(0.1))
    assert spec == ForgetSpec("profiles", fraction=0.1) and repr(spec.to_dict()) == repr(ForgetSpec("profiles", fraction=0.1).to_dict())


def test_a_class_fraction_that_selects_nothing_is_an_error(digits):
    with pytest.raises(EmptySelection, match="selects none"):
        select_forget(digits.train, ForgetSpec("classes", classes=(3,), fraction=0.001), np.random.default_rng(0), 10)
