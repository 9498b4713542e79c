"""A TiPAI KSampler whose Miner, Guard, Policy and Editor inputs are left unconnected behaves exactly
like one wired to those nodes at their schema defaults: the same latents, bit for bit, and the same
tournaments. The defaults are read from the nodes' own schemas, so a default changed in one place
but not the other fails here."""

from __future__ import annotations

import pytest
import torch

STEPS = 8
SETTINGS_NODES = {
    "miner": "TiPAIRegionMiner",
    "editor": "TiPAIAuditorInpaint",
    "guard": "TiPAITournamentGuard",
    "policy": "TiPAITSPOSampler",
}


def schema_defaults(cls) -> dict:
    """Every widget input of a node at its schema default (sockets without a default are left out)."""
    out = {}
    for inp in cls.define_schema().inputs:
        if getattr(inp, "default", None) is not None:
            out[inp.id] = inp.default
    return out


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return tiny_sd("a red circle left of a blue square")


def test_unconnected_settings_equal_the_nodes_at_their_defaults(comfy_inproc, sd, tiny_auditor):
    node = comfy_inproc.node_class
    auditor = node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]
    wired = {}
    for key, node_id in SETTINGS_NODES.items():
        cls = node(node_id)
        defaults = schema_defaults(cls)
        assert defaults, f"{node_id} has no widget defaults"
        wired[key] = cls.execute(**defaults).args[0]

    def run(settings: dict):
        out = node("TiPAIKSampler").execute(
            sd["model"],
            11,
            STEPS,
            5.0,
            "euler",
            "normal",
            sd["pos"],
            sd["neg"],
            sd["latent"],
            1.0,
            "a red circle left of a blue square",
            sd["vae"],
            auditor,
            settings.get("miner"),
            settings.get("editor"),
            settings.get("guard"),
            settings.get("policy"),
        )
        return out.args[0]["samples"], out.args[1]

    latent_none, report_none = run({})
    latent_wired, report_wired = run(wired)
    assert torch.equal(latent_none, latent_wired)
    # not a vacuous match: audits ran, at the defaults' steps, with tournaments of the default N
    assert report_none["summary"]["audited_steps"] > 0 and report_none["records"]
    strip = ("seconds",)
    assert {k: v for k, v in report_none["summary"].items() if k not in strip} == {
        k: v for k, v in report_wired["summary"].items() if k not in strip
    }
    for a, b in zip(report_none["records"], report_wired["records"], strict=True):
        assert a["actions"] == b["actions"] and a["utilities"] == b["utilities"] and a["guard"] == b["guard"]
    # the defaults are the ones the schemas show: first audit at the Guard's audit_first, N from the TSPO node
    guard_defaults = schema_defaults(node("TiPAITournamentGuard"))
    assert min(st["step"] for st in report_none["steps"]) == guard_defaults["audit_first"]
    n = schema_defaults(node("TiPAITSPOSampler"))["n"]
    assert all(len(r["actions"]) == n for r in report_none["records"])
    assert all(r["guard"]["delta"] == guard_defaults["delta"] for r in report_none["records"])
