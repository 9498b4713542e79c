"""The shipped workflows: every API-format workflow runs through POST /prompt on a real server,
and every UI-format workflow uses only node types the server knows, with consistent links."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
API = sorted((WORKFLOWS / "api").glob("*.json"))
UI = sorted(WORKFLOWS.glob("*.json"))


def test_every_api_workflow_has_a_ui_twin():
    assert {p.name for p in API} == {p.name for p in UI}
    assert len(API) >= 4


@pytest.fixture(scope="module")
def example_image(comfy_server):
    """An RGBA input image: the transparent square becomes LoadImage's mask (the user's region)."""
    rng = np.random.default_rng(0)
    rgba = np.concatenate([rng.integers(0, 256, (64, 64, 3)), np.full((64, 64, 1), 255)], axis=-1).astype(np.uint8)
    rgba[16:40, 16:40, 3] = 0
    Image.fromarray(rgba, "RGBA").save(comfy_server.input_dir / "tipai_example.png")
    return "tipai_example.png"


@pytest.mark.parametrize("path", API, ids=lambda p: p.stem)
def test_api_workflow_runs(comfy_server, example_image, path):
    graph = json.loads(path.read_text())
    entry = comfy_server.run(graph, timeout=600)
    outputs = entry["outputs"]
    saved = [img for out in outputs.values() for img in out.get("images", []) if img.get("type") == "output"]
    assert saved, f"{path.name} saved no image"
    for img in saved:
        assert Image.open(__import__("io").BytesIO(comfy_server.image_bytes(img))).size == (64, 64)
    reports = [r for out in outputs.values() for r in out.get("tipai_report", [])]
    uses_ksampler = any(n["class_type"] == "TiPAIKSampler" for n in graph.values())
    if uses_ksampler:
        assert reports and all(r["audited_steps"] > 0 for r in reports)
    if path.stem == "tipai_inpaint_biases":
        # the user's mask is the region: every tournament is about it, and only it
        assert all(r["regions"] >= 1 for r in reports)


@pytest.mark.parametrize("path", UI, ids=lambda p: p.stem)
def test_ui_workflow_is_consistent(comfy_server, path):
    info = comfy_server.get_json("/object_info")
    ui = json.loads(path.read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    unknown = sorted({n["type"] for n in nodes.values()} - set(info))
    assert not unknown, f"{path.name}: node types not in /object_info: {unknown}"
    links = {lk[0]: lk for lk in ui["links"]}
    assert len(links) == len(ui["links"]) and ui["last_link_id"] >= max(links, default=0)
    for lid, (_, src, src_slot, dst, dst_slot, typ) in links.items():
        assert src in nodes and dst in nodes, f"link {lid} joins missing nodes"
        out = nodes[src]["outputs"][src_slot]
        assert lid in out["links"] and out["type"] == typ == info[nodes[src]["type"]]["output"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert inp["link"] == lid
    for node in nodes.values():
        for inp in node["inputs"]:
            assert inp["link"] is None or inp["link"] in links
            spec = {
                **info[node["type"]]["input"].get("required", {}),
                **info[node["type"]]["input"].get("optional", {}),
            }
            assert inp["name"] in spec, f"{node['type']} has no input {inp['name']!r}"
        for slot in node["outputs"]:
            for lid in slot["links"]:
                assert links[lid][1] == node["id"]
