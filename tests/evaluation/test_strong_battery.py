"""strong_battery: the one list of evidence benchmarks/attacks.py and benchmarks/tuning.py judge by."""

from unlearnkit.evaluation import DEFAULT_BATTERY, STRONG_ATTACKS, build_metric, strong_battery
from unlearnkit.registry import METRICS


def names(battery):
    return [m if isinstance(m, str) else m["name"] for m in battery]


def test_the_default_evidence_then_every_strong_attack_sized_then_the_noise_floor():
    battery = strong_battery(4, 6, also=("nomus",))
    got = names(battery)
    assert got[-1] == "noise_floor" and set(DEFAULT_BATTERY) | set(STRONG_ATTACKS) | {"nomus"} == set(got)
    assert len(got) == len(set(got))  # nothing twice
    sized = {m["name"]: m["params"] for m in battery if isinstance(m, dict)}
    assert sized == {"lira": {"n_shadows": 4}, "u_lira": {"n_shadows": 4}, "label_only": {"n_shadows": 4},
                     "epsilon_score": {"n_models": 6}, "klom": {"n_models": 6}}
    for name in got:  # every one a registered metric that accepts its parameters
        assert name in METRICS
        build_metric(name, sized.get(name, {}))
    assert "nomus" not in names(strong_battery())
