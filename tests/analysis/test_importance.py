import torch

from unlearnkit.analysis.importance import dampen


def test_dampen_formula_hand_computed():
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0])
    imp_forget = torch.tensor([1.0, 5.0, 20.0, 100.0])
    imp_full = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = theta.clone()
    sel = dampen({"w": out}, {"w": imp_forget}, {"w": imp_full}, alpha=4.0, lam=2.0)["w"]
    # selected where I_f > 4·I_D: coords 1, 2, 3; beta = min(2·1/I_f, 1) -> 0.4, 0.1, 0.02
    assert sel.tolist() == [False, True, True, True]
    assert torch.allclose(out, torch.tensor([1.0, 2.0 * 0.4, 3.0 * 0.1, 4.0 * 0.02]))


def test_dampen_never_grows_a_parameter():
    theta = torch.tensor([1.0, -1.0])
    out = theta.clone()
    dampen({"w": out}, {"w": torch.tensor([3.0, 3.0])}, {"w": torch.tensor([1.0, 1.0])}, alpha=1.0, lam=10.0)  # λ·I_D/I_f > 1
    assert torch.equal(out, theta)
