#!/usr/bin/env python3
"""Write the UI-format workflows (drag into ComfyUI) from their API-format twins in workflows/api/.

    python3 scripts/make_workflows.py
    python3 scripts/make_workflows.py --thumbnails out/browser   the template cards, from the browser test

It starts the test host's ComfyUI and reads /object_info, so every node gets the sockets and widget
values of the current node definitions. Then it lays the graph out so that nothing overlaps:

- each node's size is estimated per widget from its definition (``node_size``), never smaller than
  what the frontend draws (the browser test checks this against the frontend's own node bounds);
- the main chain runs left to right by depth, each column as wide as its widest node;
- the TiPAI settings nodes sit in a titled group below the chain;
- a Markdown note on the left says what the workflow shows, where model files go, how the mask works
  and what to change first (``workflow_notes.py``), and the first view (``extra.ds``) opens on the
  note and the start of the chain at a zoom where text is drawn.

The API files are the source of truth; run this after changing one (or a node's inputs). The host
test test_workflows.py checks that both forms stay consistent.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import host  # scripts/ is on sys.path: this file runs as a script
from comfy_server import ComfyServer
from workflow_notes import WORKFLOWS

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _inputs_in_order(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order", {})
    out = []
    for group in ("required", "optional"):
        specs = info["input"].get(group, {})
        for name in order.get(group, list(specs)):
            out.append((name, specs[name]))
    return out


def _depths(graph: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def d(nid: str) -> int:
        if nid not in depth:
            ups = [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((d(u) for u in ups), default=-1)
        return depth[nid]

    for nid in graph:
        d(nid)
    return depth


# Node sizes in canvas pixels. LiteGraph draws the title above a node's pos, slots at 20 px a row and
# widgets at 24; these round up, so a saved size is never below what the frontend computes.
TITLE_H = 30
SLOT_H = 22
WIDGET_H = 26
MULTILINE_H = 110  # a multiline text box
REPORT_H = 180  # the report box web/tipai_report.js adds to these nodes
REPORT_NODES = {"TiPAIKSampler", "TiPAIPatchModel", "TiPAISaveTournamentLog", "TiPAIRefereeRefine"}
IMAGE_H = 260  # room for the preview a node shows after Run
IMAGE_NODES = {"PreviewImage", "SaveImage", "TiPAIPatchModel", "TiPAIKSampler", "LoadImage"}
TEXT_NODES = {"PreviewAny": 160}
WIDE, NARROW = 400, 320
NOTE_W = 460
GAP_X, GAP_Y = 80, 50
SETTINGS = ("TiPAIAuditorLoader", "TiPAIRegionMiner", "TiPAIAuditorInpaint", "TiPAITournamentGuard", "TiPAITSPOSampler")
GROUP_TITLE = "TiPAI settings: the auditor, the miner, the editor, the guard and the policy"
GROUP_PAD, GROUP_TITLE_H = 20, 50
FIRST_VIEW_SCALE = 0.8  # text is drawn from about 0.6 on
# canvas units left free at the top left of the first view: the frontend's side bar (about 55 px) and
# its floating workflow title and Run bar (about 110 px) lie over the canvas
FIRST_VIEW_MARGIN = (110, 190)


def node_size(class_type: str, info: dict, n_linked_widgets: int) -> list[int]:
    """[width, height] of a node's body, from its sockets and widgets."""
    widgets = sockets = 0
    height = 0
    for _name, spec in _inputs_in_order(info):
        if is_widget(spec):
            widgets += 1
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            height += MULTILINE_H if opts.get("multiline") else WIDGET_H
            if opts.get("control_after_generate"):
                height += WIDGET_H
        else:
            sockets += 1
    rows = max(sockets + n_linked_widgets, len(info["output"]))
    height += rows * SLOT_H + 16
    if class_type in REPORT_NODES:
        height += REPORT_H
    if class_type in IMAGE_NODES:
        height += IMAGE_H
    height += TEXT_NODES.get(class_type, 0)
    width = WIDE if class_type.startswith("TiPAI") or class_type in IMAGE_NODES | set(TEXT_NODES) else NARROW
    return [width, max(height, 80)]


def _note_size(text: str) -> list[int]:
    # about 62 characters a line at the note's width, 22 px a line, plus blank lines and margins
    lines = sum(max(1, -(-len(line) // 62)) for line in text.splitlines())
    return [NOTE_W, 22 * lines + 40]


def _ui_node(nid: int, class_type: str, info: dict, order: int, title: str | None) -> dict:
    node = {
        "id": nid,
        "type": class_type,
        "pos": [0, 0],
        "size": [0, 0],
        "flags": {},
        "order": order,
        "mode": 0,
        "inputs": [],
        "outputs": [
            {"name": name, "type": typ, "links": [], "slot_index": s}
            for s, (typ, name) in enumerate(zip(info["output"], info["output_name"]))
        ],
        "properties": {"Node name for S&R": class_type},
        "widgets_values": [],
    }
    if title:
        node["title"] = title
    return node


def _widget_values(spec: list, value, linked: bool) -> list:
    """What the frontend saves for one widget input: its value, plus the values of the widgets it adds."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    default = opts.get("default")
    # a widget fed by a link keeps a value in the frontend too: its default, or "" for text
    kept = default if default is not None else ("" if spec[0] == "STRING" else None)
    out = [kept if linked else (value if value is not None else default)]
    if opts.get("control_after_generate"):
        out.append("fixed")
    if opts.get("image_upload"):
        out.append("image")  # the frontend's upload button, saved as "image"
    return out


def api_to_ui(graph: dict, object_info: dict, note: str = "", titles: dict[str, str] | None = None) -> dict:
    """LiteGraph UI JSON (version 0.4) for an API-format graph, laid out as the module docstring says."""
    titles = titles or {}
    missing = sorted({n["class_type"] for n in graph.values()} - set(object_info))
    if missing:
        raise ValueError(f"node types not known to this ComfyUI: {missing}")
    depth = _depths(graph)
    nodes, links = {}, []
    order = sorted(graph, key=lambda k: (depth[k], int(k)))
    for i, nid in enumerate(order):
        info = object_info[graph[nid]["class_type"]]
        nodes[nid] = _ui_node(int(nid), graph[nid]["class_type"], info, i, titles.get(nid))
    link_id = 0
    for nid in order:
        node, info, given = nodes[nid], object_info[graph[nid]["class_type"]], graph[nid]["inputs"]
        for name, spec in _inputs_in_order(info):
            value = given.get(name)
            linked = isinstance(value, list)
            if is_widget(spec):
                node["widgets_values"] += _widget_values(spec, value, linked)
                if not linked:
                    continue
            elif not linked and name in info["input"].get("optional", {}):
                node["inputs"].append(
                    {"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": None}
                )
                continue
            if not linked:
                raise ValueError(f"node {nid} ({graph[nid]['class_type']}): required input {name!r} is not connected")
            link_id += 1
            src, slot = str(value[0]), int(value[1])
            typ = object_info[graph[src]["class_type"]]["output"][slot]
            entry = {"name": name, "type": typ, "link": link_id}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            node["inputs"].append(entry)
            nodes[src]["outputs"][slot]["links"].append(link_id)
            links.append([link_id, int(src), slot, int(nid), len(node["inputs"]) - 1, typ])
    for nid in order:
        linked_widgets = sum(1 for inp in nodes[nid]["inputs"] if "widget" in inp)
        nodes[nid]["size"] = node_size(graph[nid]["class_type"], object_info[graph[nid]["class_type"]], linked_widgets)
    groups, note_node = _layout(graph, nodes, order, note, link_id)
    ui_nodes = [nodes[k] for k in order] + ([note_node] if note_node else [])
    return {
        "last_node_id": max(n["id"] for n in ui_nodes),
        "last_link_id": link_id,
        "nodes": ui_nodes,
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {
            "tipai": "generated by scripts/make_workflows.py from workflows/api/",
            # open on the note and the start of the chain, at a zoom where text is drawn
            "ds": {"scale": FIRST_VIEW_SCALE, "offset": list(FIRST_VIEW_MARGIN)},
        },
        "version": 0.4,
    }


def _layout(graph: dict, nodes: dict, order: list[str], note: str, link_count: int):
    """Place the nodes (see the module docstring); return the groups and the note node (or None)."""
    settings = [k for k in order if graph[k]["class_type"] in SETTINGS]
    main = [k for k in order if k not in settings]
    sub = {k: graph[k] for k in main}
    # depth along the main chain only: settings nodes do not push the chain to the right
    for k in sub:
        sub[k] = {
            "inputs": {n: v for n, v in graph[k]["inputs"].items() if not (isinstance(v, list) and v[0] in settings)}
        }
    depth = _depths(sub)
    x0 = 0
    note_node = None
    if note:
        w, h = _note_size(note)
        note_node = {
            "id": max(int(k) for k in graph) + 1,
            "type": "MarkdownNote",
            "title": "Read me",
            "pos": [0, 0],
            "size": [w, h],
            "flags": {},
            "order": len(order),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [note],
            "color": "#432",
            "bgcolor": "#653",
        }
        x0 = w + GAP_X
    columns: dict[int, list[str]] = {}
    for k in main:
        columns.setdefault(depth[k], []).append(k)
    x, bottom = x0, 0
    for d in sorted(columns):
        y = 0
        for k in columns[d]:
            nodes[k]["pos"] = [x, y]
            y += nodes[k]["size"][1] + TITLE_H + GAP_Y
        bottom = max(bottom, y)
        x += max(nodes[k]["size"][0] for k in columns[d]) + GAP_X
    groups = []
    if settings:
        top = bottom + GROUP_TITLE_H + TITLE_H
        x = x0
        for k in settings:
            nodes[k]["pos"] = [x, top]
            x += nodes[k]["size"][0] + GAP_X / 2
        right = max(nodes[k]["pos"][0] + nodes[k]["size"][0] for k in settings)
        low = max(nodes[k]["pos"][1] + nodes[k]["size"][1] for k in settings)
        gx, gy = x0 - GROUP_PAD, top - TITLE_H - GROUP_TITLE_H
        groups.append(
            {
                "title": GROUP_TITLE,
                "bounding": [gx, gy, right + GROUP_PAD - gx, low + GROUP_PAD - gy],
                "color": "#3f789e",
                "font_size": 24,
                "flags": {},
            }
        )
    return groups, note_node


def _reflow(note: str) -> str:
    """One line per paragraph: the frontend's Markdown box wraps by itself (and joins broken lines oddly)."""
    return "\n\n".join(" ".join(p.split()) if not p.startswith("#") else p for p in note.strip().split("\n\n"))


def copy_thumbnails(folder: Path) -> int:
    """Copy the browser test's ``<name>.thumbnail.jpg`` cards into workflows/ as ``<name>.jpg``."""
    found = 0
    for name, _note, _titles in WORKFLOWS.values():
        card = folder / f"{name}.thumbnail.jpg"
        if not card.is_file():
            print(f"no thumbnail {card}: run `python3 scripts/test.py -m browser` first", file=sys.stderr)
            continue
        target = host.REPO / "workflows" / f"{name}.jpg"
        target.write_bytes(card.read_bytes())
        print(f"wrote {target.relative_to(host.REPO)}")
        found += 1
    return 0 if found == len(WORKFLOWS) else 1


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--thumbnails":
        return copy_thumbnails(Path(sys.argv[2]))
    host_dir = host.ensure_host()
    with (
        host.in_use(host_dir),
        tempfile.TemporaryDirectory() as work,
        ComfyServer(
            host.venv_python(host_dir), host_dir / "ComfyUI", Path(work), base_directory=host.install_pack(host_dir)
        ) as srv,
    ):
        info = srv.get_json("/object_info")
    for api in sorted((host.REPO / "workflows" / "api").glob("*.json")):
        name, note, titles = WORKFLOWS[api.stem]
        ui = api_to_ui(json.loads(api.read_text()), info, _reflow(note), titles)
        out = host.REPO / "workflows" / f"{name}.json"
        out.write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote {out.relative_to(host.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
