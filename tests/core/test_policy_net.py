"""π_θ(a|s): draws with their log-probs, the depth budget, files and their knob checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tipai_core.policy.actions import PolicyState
from tipai_core.policy.policy_net import DEFAULT_CHOICES, PolicyNet, state_features

STATE = PolicyState(
    step=6,
    n_steps=20,
    t=0.3,
    sigma=1.2,
    region_area=0.1,
    region_score=3.0,
    audit_scale=0.5,
    max_depth=2,
    control_S=0.4,
    control_F=0.7,
    control_P=(0.9, 0.2),
    signals=(("risk", 0.7),),
)


def _trained(seed=0):
    torch.manual_seed(seed)
    net = PolicyNet(n_classes=2, hidden=8)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    net.fit_normaliser(torch.randn(16, len(net.feat_mean)) * 2 + 1)
    return net


def test_normaliser_centres_features_and_a_fresh_policy_is_uniform():
    net = PolicyNet(n_classes=2, hidden=8)
    feats = torch.stack([state_features(STATE, 2), state_features({**STATE.to_dict(), "t": 0.9}, 2)])
    net.fit_normaliser(feats)
    x = (feats - net.feat_mean) / net.feat_scale
    assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-6)
    assert float(x[:, 0].abs().max()) > 0.9 and float(x[:, 1:].abs().max()) == 0.0  # only t varies here
    table = net.log_probs_table(feats)
    assert all(torch.allclose(lp.exp(), torch.full_like(lp, 1.0 / lp.shape[1])) for lp in table.values())


def test_propose_log_probs_match_log_prob_and_depth_budget():
    net = _trained()
    actions, logp = net.propose(STATE, 64, torch.Generator().manual_seed(1))
    assert len(actions) == 64 and logp.dtype == torch.float64
    assert all(a.depth <= STATE.max_depth for a in actions)  # d ≤ steps taken
    for a, lp in zip(actions[:10], logp[:10]):
        assert math.isclose(net.log_prob(a, STATE), float(lp), rel_tol=1e-5, abs_tol=1e-5)
    again, logp2 = net.propose(STATE, 64, torch.Generator().manual_seed(1))
    assert again == actions and torch.equal(logp, logp2)
    # the restricted depth distribution sums to one over allowed depths
    table = net.log_probs_table(net.features([STATE]), torch.tensor([STATE.max_depth]))
    assert torch.isclose(table["depth"].exp().sum(), torch.tensor(1.0)) and table["depth"][0, 2].item() == -math.inf


def test_state_features_read_control_scores_and_old_states():
    f = state_features(STATE, 2)
    assert f[6] == 1.0 and math.isclose(float(f[7]), 0.4, rel_tol=1e-6) and math.isclose(float(f[9]), 0.8, rel_tol=1e-6)
    old = {k: v for k, v in STATE.to_dict().items() if k not in ("control_S", "control_F", "control_P", "signals")}
    g = state_features(old, 2)
    assert g[6] == 0.0 and g.shape == f.shape


def test_save_load_round_trip_and_knob_mismatch(tmp_path):
    net = _trained()
    path = net.save(tmp_path / "pol", metadata={"note": "x"})
    back = PolicyNet.load(path, expect_knobs=DEFAULT_CHOICES)
    a, lp = net.propose(STATE, 8, torch.Generator().manual_seed(3))
    b, lp2 = back.propose(STATE, 8, torch.Generator().manual_seed(3))
    assert a == b and torch.allclose(lp, lp2)
    assert torch.equal(back.feat_mean, net.feat_mean) and torch.equal(back.feat_scale, net.feat_scale)
    # a file from before the normaliser reads with the identity normaliser
    from safetensors.torch import load_file, save_file

    old = {k: v for k, v in load_file(str(path)).items() if not k.startswith("feat_")}
    save_file(old, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(path.with_suffix(".json").read_text())
    legacy = PolicyNet.load(tmp_path / "old.safetensors")
    assert float(legacy.feat_mean.abs().sum()) == 0.0 and torch.equal(
        legacy.feat_scale, torch.ones_like(net.feat_scale)
    )
    with pytest.raises(ValueError, match="knobs do not match: cfg_inside"):
        PolicyNet.load(path, expect_knobs={**DEFAULT_CHOICES, "cfg_inside": (4.0, 8.0)})
    # a JSON whose knobs disagree with the weights
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["knobs"]["depth"] = [1, 2]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="weights do not match the knobs"):
        PolicyNet.load(path)
    meta["knobs"]["depth"] = [1, 2, 3]
    meta["knobs"]["sharpness"] = [1]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown knob 'sharpness'"):
        PolicyNet.load(path)
    meta["schema"] = "tipai.policy/0"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="schema"):
        PolicyNet.load(path)
