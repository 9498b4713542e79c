"""TSPO against the real host: ``python -m tipai_core.train tspo online`` drives a real ComfyUI server over
HTTP (tiny checkpoint, tiny auditor), writes a policy file, and the TiPAI TSPO Sampler node then loads that
file and draws the candidates of a workflow run with it (the logged log-probs are the file's own)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "workflows" / "api" / "tipai_txt2img.json"


def _tiny(graph: dict) -> dict:
    """The txt2img template cut down: 64×64, 6 steps, N = 2, audits at steps 1 and 3."""
    g = copy.deepcopy(graph)
    node = lambda cls: next(v for v in g.values() if v["class_type"] == cls)  # noqa: E731
    node("TiPAIKSampler")["inputs"]["steps"] = 6
    node("TiPAITSPOSampler")["inputs"]["n"] = 2
    node("TiPAITournamentGuard")["inputs"].update(audit_every=2, audit_first=1, skip_last=1, audit_scales="1.0")
    assert node("EmptyLatentImage")["inputs"]["width"] == 64
    return g


def _records(server, entry: dict) -> list[dict]:
    out = []
    for node_out in entry["outputs"].values():
        for f in node_out.get("tipai_logs", []):
            if f["filename"].endswith(".records.jsonl"):
                path = server.output_dir / f.get("subfolder", "") / f["filename"]
                out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture
def policy_dir(comfy_dir):
    d = comfy_dir / "models" / "tipai"
    d.mkdir(parents=True, exist_ok=True)
    stem = f"tspo_host_{os.getpid()}"
    yield d, stem
    for p in d.glob(f"*{stem}*"):  # only this test's files
        if p.is_file():
            p.unlink()


def test_tspo_online_trains_against_the_server_and_the_node_uses_the_policy(comfy_server, policy_dir, tmp_path):
    folder, stem = policy_dir
    workflow = tmp_path / "tspo_template.json"
    workflow.write_text(json.dumps(_tiny(json.loads(TEMPLATE.read_text()))))
    out = folder / f"{stem}.safetensors"
    cmd = [sys.executable, "-m", "tipai_core.train", "tspo", "online", "--server", comfy_server.url,
           "--policy-dir", str(folder), "--workflow", str(workflow), "--iterations", "2", "--jobs", "1",
           "--steps", "2", "--lr", "0.05", "--job-timeout", "240", "--out", str(out), "--seed", "3"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, f"tspo online failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{comfy_server.log_tail()}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[tspo] online iteration")]
    assert len(lines) == 2 and all("tournaments=" in ln for ln in lines), proc.stdout
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert (folder / f"{stem}.curve.png").read_bytes().startswith(b"\x89PNG")
    assert not list(folder.glob(f"_tspo_online_{stem}*")), "the rolling policy file was left behind"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["schema"] == "tipai.policy/1" and meta["metadata"]["mode"] == "online"
    assert meta["metadata"]["curve_last"]["tournaments"] > 0

    # the trained policy moved off the uniform start (the servers' utilities gave it gradient), and its
    # normaliser was fitted to the states the server reported
    from safetensors.torch import load_file

    w = load_file(str(out))
    assert float(w["feat_scale"].min()) > 0 and float(w["feat_mean"].abs().sum()) > 0
    assert any(float(v.abs().sum()) > 0 for k, v in w.items() if k.startswith(("heads.", "skip.")))

    # the TSPO Sampler node loads the file from models/tipai and draws with it in a workflow
    graph = _tiny(json.loads(TEMPLATE.read_text()))
    sampler = next(v for v in graph.values() if v["class_type"] == "TiPAITSPOSampler")
    sampler["inputs"].update(policy_file=out.name, seed=11)
    next(v for v in graph.values() if v["class_type"] == "TiPAIKSampler")["inputs"]["seed"] = 1234
    info = comfy_server.get_json("/object_info/TiPAITSPOSampler")["TiPAITSPOSampler"]
    assert f'"{out.name}"' in json.dumps(info["input"]["optional"]["policy_file"])  # the node lists the new file
    entry = comfy_server.run(graph, timeout=300)
    records = _records(comfy_server, entry)
    assert records, "the workflow with the learned policy logged no tournament"
    sys.path.insert(0, str(REPO))
    from tipai_core.actions import Action, PolicyState
    from tipai_core.policy_net import PolicyNet

    net = PolicyNet.load(out)
    for rec in records:
        assert len(rec["actions"]) == 2
        state = PolicyState.from_dict(rec["state"])
        for a, lp in zip(rec["actions"], rec["log_probs"]):
            assert a["depth"] in net.choices["depth"] and a["depth"] <= state.max_depth
            assert a["editor"] in net.choices["editor"] and a["cfg_inside"] in net.choices["cfg_inside"]
            # the log-prob the node recorded is the learned file's π_θ(a | s), not the fixed lists'
            assert math.isclose(net.log_prob(Action.from_dict(a), state), lp, rel_tol=1e-4, abs_tol=1e-4)
    uniform = -sum(math.log(len(v)) for k, v in net.choices.items() if k != "depth")
    assert any(abs(lp - uniform) > 1e-3 for rec in records for lp in rec["log_probs"])


def test_online_mode_refuses_non_loopback_servers_and_bad_templates(tmp_path):
    sys.path.insert(0, str(REPO))
    from tipai_core.train import tspo as tspo_stage

    with pytest.raises(ValueError, match="127.0.0.1"):
        tspo_stage.ComfyClient("http://example.com:8188")
    with pytest.raises(ValueError, match="TiPAI TSPO Sampler"):
        tspo_stage.prepare_template({"1": {"class_type": "KSampler", "inputs": {}}})
