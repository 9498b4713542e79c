"""The shipped workflows: every API-format workflow runs through POST /prompt on a real server,
and every UI-format workflow uses only node types the server knows, with consistent links."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from make_workflows import SETTINGS  # scripts/ is on pytest's pythonpath
from PIL import Image
from workflow_notes import WORKFLOWS as NAMES

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
API = sorted((WORKFLOWS / "api").glob("*.json"))
UI = sorted(WORKFLOWS.glob("*.json"))
FRONTEND_ONLY = {"MarkdownNote", "Note"}  # drawn by the frontend, never sent to the server


def test_every_api_workflow_has_a_ui_twin():
    assert {NAMES[p.stem][0] for p in API} == {p.stem for p in UI}
    assert len(API) >= 4


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
    unknown = sorted({n["type"] for n in nodes.values()} - set(info) - FRONTEND_ONLY)
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
        if node["type"] in FRONTEND_ONLY:
            continue
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


@pytest.mark.parametrize("path", UI, ids=lambda p: p.stem)
def test_ui_workflow_explains_itself_and_nothing_overlaps(path):
    ui = json.loads(path.read_text())
    notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    for part in ("**What it shows.**", "**Model files.**", "**What to change first.**"):
        assert part in text, f"{path.name}: the note lacks {part}"
    if any(n["type"] in ("TiPAIKSampler", "TiPAIPatchModel") for n in ui["nodes"]):
        assert "**Overlay legend.**" in text
    if any(n["type"] == "TiPAIRegionMiner" and any(i["name"] == "user_mask" and i["link"] for i in n["inputs"])
           for n in ui["nodes"]):  # fmt: skip
        assert "**How the mask works.**" in text
    assert ui["extra"]["ds"]["scale"] >= 0.6  # text is drawn
    # saved bounds, title bar included: the browser test checks the frontend's own bounds
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]]  # fmt: skip
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2], f"nodes {a[0]} and {b[0]} overlap"
    (group,) = ui["groups"]
    gx, gy, gw, gh = group["bounding"]
    for n in ui["nodes"]:
        if n["type"] in SETTINGS:  # every settings node inside the titled group, below its title
            assert gx <= n["pos"][0] and n["pos"][0] + n["size"][0] <= gx + gw and gy < n["pos"][1] - 30


def test_the_template_browser_lists_every_workflow_with_its_card(comfy_server):
    """The frontend lists a pack's templates from /workflow_templates and shows ``<name>.jpg`` beside each."""
    import urllib.parse
    import urllib.request

    listed = comfy_server.get_json("/workflow_templates")
    assert sorted(listed.get("comfyui-tipai", [])) == sorted(p.stem for p in UI)
    for p in UI:
        url = f"{comfy_server.url}/api/workflow_templates/comfyui-tipai/{urllib.parse.quote(p.stem)}.jpg"
        with urllib.request.urlopen(url, timeout=30) as answer:
            body = answer.read()
        assert answer.headers["Content-Type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff", p.stem
        assert Image.open(__import__("io").BytesIO(body)).size[0] >= 320
