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


@pytest.fixture(scope="module")
def trained(comfy_server, comfy_dir, tmp_path_factory):
    """``python -m tipai_core.train tspo online`` for 2 iterations × 1 run against the server."""
    folder = comfy_dir / "models" / "tipai"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"tspo_host_{os.getpid()}"
    tmp = tmp_path_factory.mktemp("tspo_host")
    workflow = tmp / "tspo_template.json"
    workflow.write_text(json.dumps(_tiny(json.loads(TEMPLATE.read_text()))))
    out = folder / f"{stem}.safetensors"
    logs = comfy_server.output_dir / "tipai_logs"
    before = set(logs.glob("tspo_online_*.records.jsonl")) if logs.exists() else set()
    cmd = [
        sys.executable,
        "-m",
        "tipai_core.train",
        "tspo",
        "online",
        "--server",
        comfy_server.url,
        "--policy-dir",
        str(folder),
        "--workflow",
        str(workflow),
        "--iterations",
        "2",
        "--jobs",
        "1",
        "--steps",
        "2",
        "--lr",
        "0.05",
        "--job-timeout",
        "240",
        "--out",
        str(out),
        "--seed",
        "3",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    try:
        assert proc.returncode == 0, (
            f"tspo online failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{comfy_server.log_tail()}"
        )
        round_logs = sorted(set(logs.glob("tspo_online_*.records.jsonl")) - before)
        yield {
            "folder": folder,
            "stem": stem,
            "out": out,
            "stdout": proc.stdout,
            "tmp": tmp,
            "records": [json.loads(ln) for p in round_logs for ln in p.read_text().splitlines() if ln.strip()],
        }
    finally:
        for p in folder.glob(f"*{stem}*"):  # only this module's files
            if p.is_file():
                p.unlink()


def test_tspo_online_trains_against_the_server_and_the_node_uses_the_policy(comfy_server, trained):
    folder, stem, out, stdout = trained["folder"], trained["stem"], trained["out"], trained["stdout"]
    lines = [ln for ln in stdout.splitlines() if ln.startswith("[tspo] online iteration")]
    assert len(lines) == 2 and all("tournaments=" in ln for ln in lines), stdout
    assert len(trained["records"]) >= 2, "the servers' runs logged no tournaments"
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
    from tipai_core.policy.actions import Action, PolicyState
    from tipai_core.policy.policy_net import PolicyNet

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
    from tipai_core.train import tspo as tspo_stage

    with pytest.raises(ValueError, match="127.0.0.1"):
        tspo_stage.ComfyClient("http://example.com:8188")
    with pytest.raises(ValueError, match="TiPAI TSPO Sampler"):
        tspo_stage.prepare_template({"1": {"class_type": "KSampler", "inputs": {}}})


def test_calibrated_guard_node_loads_a_calibration_file_and_refuses_another_auditors(comfy_server, trained):
    """``python -m tipai_core.train calibrate`` writes a file for the tiny auditor's classes; the Tournament
    Guard node (auditor connected) guards a workflow run with its δ; a file for another auditor is refused."""
    folder, stem, tmp = trained["folder"], trained["stem"], trained["tmp"]
    classes = tuple(trained["records"][0]["scores"]["classes"])
    import torch

    from tipai_core.records.tournament_log import append_records
    from tipai_core.testing.bandit import calibration_records

    log = tmp / "labelled.records.jsonl"
    append_records(log, calibration_records(300, 4, torch.Generator().manual_seed(0), classes=classes))
    good, other = folder / f"{stem}.calibration.json", folder / f"{stem}.other.calibration.json"
    for path, auditor in ((good, "tipai_tiny_auditor.safetensors"), (other, "someone_elses_auditor.safetensors")):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tipai_core.train",
                "calibrate",
                "--logs",
                str(log),
                "--out",
                str(path),
                "--auditor",
                auditor,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    cal = json.loads(good.read_text())
    assert cal["auditor"] == {"name": "tipai_tiny_auditor.safetensors", "classes": list(classes)}
    assert cal["delta"] > 0.02  # not the node's default, so the records below show whose δ guarded them

    graph = _tiny(json.loads(TEMPLATE.read_text()))
    gid = next(k for k, v in graph.items() if v["class_type"] == "TiPAITournamentGuard")
    aid = next(k for k, v in graph.items() if v["class_type"] == "TiPAIAuditorLoader")
    graph[gid]["inputs"].update(calibration_file=good.name, auditor=[aid, 0])
    next(v for v in graph.values() if v["class_type"] == "TiPAIKSampler")["inputs"]["seed"] = 4321
    records = _records(comfy_server, comfy_server.run(graph, timeout=300))
    assert records, "the calibrated workflow logged no tournament"
    for rec in records:
        assert math.isclose(rec["guard"]["delta"], cal["delta"], rel_tol=1e-9)
        assert len(rec["guard"]["tau_P"]) == len(classes)

    graph[gid]["inputs"]["calibration_file"] = other.name
    from comfy_server import ComfyError

    with pytest.raises(ComfyError, match="fit for the auditor 'someone_elses_auditor.safetensors'"):
        comfy_server.run(graph, timeout=300)
