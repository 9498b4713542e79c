"""The shipped UI workflows in ComfyUI's real frontend, in a real chromium: what a user sees.

Each ``workflows/*.json`` is dropped on the canvas of a fresh page, looked at (no warning dialog,
no overlapping nodes, every widget value as saved), run with the Run button until ``/history``
says it completed, and looked at again (its images and texts shown on their nodes). One drop and
one run per workflow (the module-scoped ``workflow_run``); each property is its own test, so one
failure does not hide another. Screenshots of the first view (right after the drop) and of the
finished run go to ``artifacts`` (``$TIPAI_ARTIFACTS/browser`` or ``out/browser``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import pytest

from tests.browser.frontend import MISSING_TEXTS, open_frontend, wait_history

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UI = sorted(WORKFLOWS.glob("*.json"))
RUN_TIMEOUT_S = 300  # the tiny checkpoint samples 64x64 at about 20 steps/s on CPU; audits add model calls
TEXT_KEYS = ("text", "tipai_text")  # UI outputs that are text: core's (PreviewAny) and the pack's report


@dataclass
class WorkflowRun:
    """What one drop and one run of a workflow showed."""

    path: Path
    file: dict
    dialogs: list[str] = field(default_factory=list)
    loaded: list[dict] = field(default_factory=list)  # the nodes right after the drop
    shown: list[dict] = field(default_factory=list)  # the nodes once the run ended
    prompt_id: str | None = None
    history: dict | None = None
    run_error: str | None = None
    run_seconds: float = 0.0
    progress: dict = field(default_factory=dict)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    pack_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module", params=UI, ids=lambda p: p.stem)
def workflow_run(request, chromium_browser, frontend_url, comfy_server, artifacts) -> WorkflowRun:
    path = request.param
    run = WorkflowRun(path=path, file=json.loads(path.read_text()))
    with open_frontend(chromium_browser, frontend_url) as front:
        front.watch_progress()
        front.drop_file(path)
        run.dialogs = front.dialogs()
        run.loaded = front.nodes()
        first_view = artifacts / f"{path.stem}.first-view.png"
        front.page.screenshot(path=str(first_view), full_page=True)
        print(f"\n[browser] {path.name}: first view {first_view}")
        t0 = time.time()
        try:
            answer = front.press_run()
            if answer["status"] != 200:
                body = json.dumps(answer["body"])[:4000]
                raise AssertionError(f"POST /api/prompt answered {answer['status']}: {body}")
            run.prompt_id = answer["body"]["prompt_id"]
            run.history = wait_history(comfy_server, front, run.prompt_id, RUN_TIMEOUT_S)
        except Exception as exc:  # recorded, not raised: the tests about the drop still report on their own
            run.run_error = f"{type(exc).__name__}: {exc}"
        run.run_seconds = time.time() - t0
        initial_view = front.view()
        if run.history is not None:
            front.fit_view()
            front.wait_images([int(k) for k, out in run.history["outputs"].items() if out.get("images")])
        front.pump(0.5)  # the last websocket messages reach the page
        run.shown = front.nodes()
        overview = artifacts / f"{path.stem}.overview.png"
        front.page.screenshot(path=str(overview), full_page=True)
        _thumbnail(overview, artifacts / f"{path.stem}.thumbnail.jpg")
        front.set_view(initial_view)  # the finished run as the user saw it when pressing Run
        shot = artifacts / f"{path.stem}.png"
        front.page.screenshot(path=str(shot), full_page=True)
        print(f"[browser] {path.name}: ran {run.run_seconds:.0f} s, screenshots {shot} and {overview.name}")
        run.progress = front.progress()
        run.page_errors, run.console_errors = list(front.page_errors), [e["text"] for e in front.console_errors]
        run.pack_errors = front.errors_about_pack()
    return run


def _thumbnail(overview: Path, out: Path) -> None:
    """The template browser's card picture: the finished graph, canvas only (no side bar, no top bars),
    as a small JPEG. ``scripts/make_workflows.py --thumbnails <artifacts>`` copies it into workflows/."""
    from PIL import Image

    with Image.open(overview) as img:
        w, h = img.size
        card = img.convert("RGB").crop((int(0.04 * w), int(0.11 * h), int(0.83 * w), int(0.73 * h)))
        card.thumbnail((640, 400))
        card.save(out, "JPEG", quality=82)


def _by_id(nodes: list[dict]) -> dict[int, dict]:
    return {n["id"]: n for n in nodes}


def _label(node: dict) -> str:
    return f"#{node['id']} {node['type']}"


# --- right after the drop -------------------------------------------------------------------------------


def test_no_missing_nodes_or_models_dialog(workflow_run):
    run = workflow_run
    missing = [d for d in run.dialogs if any(t.lower() in d.lower() for t in MISSING_TEXTS)]
    assert not missing, f"{run.path.name}: a missing-nodes/models warning appeared: {missing}"
    assert not run.dialogs, f"{run.path.name}: a dialog or error toast appeared after the drop: {run.dialogs}"


def test_every_choice_is_one_the_server_offers(workflow_run):
    """A model file or input image the server does not have would show as a value outside its combo's list
    (the frontend's missing-models dialog only covers models a workflow declares with a URL)."""
    run = workflow_run
    bad = [
        f"{_label(n)}.{c['name']} = {c['value']!r} (offered: {c['options'][:8]})"
        for n in run.loaded
        for c in n["combos"]
        if not c["linked"] and c["value"] not in c["options"]
    ]
    assert not bad, f"{run.path.name}: values the server does not offer: {bad}"


def _overlaps(nodes: list[dict]) -> list[str]:
    found = []
    for a, b in combinations(nodes, 2):
        (ax, ay, aw, ah), (bx, by, bw, bh) = a["bounds"], b["bounds"]
        w, h = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
        if w > 0 and h > 0:
            found.append(
                f"{_label(a)} {[round(v) for v in a['bounds']]} and {_label(b)} {[round(v) for v in b['bounds']]}"
                f" overlap by {w:.0f}x{h:.0f}"
            )
    return found


def test_nodes_do_not_overlap(workflow_run):
    """LiteGraph's own bounds (title bar included) of every node, Note nodes among them (groups are not
    nodes), right after the drop and again once the run's images and texts have made nodes grow."""
    run = workflow_run
    found = [f"after the drop: {o}" for o in _overlaps(run.loaded)]
    found += [f"after the run: {o}" for o in _overlaps(run.shown) if f"after the drop: {o}" not in found]
    assert not found, f"{run.path.name}: {len(found)} overlapping node pairs:\n" + "\n".join(found)


def test_widget_values_are_kept(workflow_run):
    run = workflow_run
    loaded = _by_id(run.loaded)
    changed = []
    for node in run.file["nodes"]:
        saved, page = node.get("widgets_values") or [], loaded[node["id"]]
        got, names = page["widgets_values"], page["widget_names"]
        for i in range(max(len(saved), len(got))):
            before, after = (saved[i] if i < len(saved) else "<absent>"), (got[i] if i < len(got) else "<absent>")
            if before != after:
                name = names[i] if i < len(names) else "?"
                changed.append(f"{_label(page)} widget {i} ({name}): file {before!r} -> page {after!r}")
    assert not changed, f"{run.path.name}: widget values changed on load:\n" + "\n".join(changed)


def test_no_page_error(workflow_run):
    run = workflow_run
    assert not run.page_errors, f"{run.path.name}: uncaught errors in the page: {run.page_errors}"
    assert not run.pack_errors, f"{run.path.name}: console errors about the pack: {run.pack_errors}"


# --- after Run ------------------------------------------------------------------------------------------


def test_run_completes(workflow_run):
    run = workflow_run
    assert run.run_error is None, f"{run.path.name}: {run.run_error}"
    status = run.history["status"]
    kinds = [m[0] for m in status.get("messages", [])]
    assert status["completed"] and status["status_str"] == "success", status
    assert "execution_error" not in kinds, status


def test_outputs_are_shown(workflow_run):
    """Every node the run gave images shows them; every text a node returned (PreviewAny's, the pack's
    report) is in one of that node's widgets; every PreviewAny shows some text."""
    run = workflow_run
    assert run.history is not None, f"{run.path.name}: no finished run to look at ({run.run_error})"
    shown = _by_id(run.shown)
    problems = []
    for key, out in run.history["outputs"].items():
        node = shown[int(key)]
        if out.get("images") and not node["imgs"]:
            problems.append(f"{_label(node)} returned {len(out['images'])} image(s) but shows none")
        for text_key in TEXT_KEYS:
            texts = [t for t in out.get(text_key, []) if isinstance(t, str) and t.strip()]
            if texts and not _holds(node, texts[0]):
                problems.append(f"{_label(node)} returned {text_key} {texts[0][:80]!r} but no widget shows it")
    for node in run.shown:
        if node["type"] == "PreviewAny" and not node["widget_shown"].get("preview", "").strip():
            problems.append(f"{_label(node)} shows no text")
    assert not problems, f"{run.path.name}:\n" + "\n".join(problems)


def _plain(text: str) -> str:
    """Text as a rendered markdown widget shows it: markup characters dropped, whitespace collapsed."""
    return " ".join(text.translate({ord(c): " " for c in "*_`#>|-"}).split())


def _holds(node: dict, text: str) -> bool:
    """One of the node's widgets holds ``text`` (its start), as its value or in what it draws."""
    head = _plain(text)[:60]
    return any(head in _plain(v) for v in [*node["widget_texts"].values(), *node["widget_shown"].values()])


def _sequences(events: list[dict], prompt_id: str | None, skip_start: bool) -> dict[str, list[tuple]]:
    """{node: [(value, max), ...]} in arrival order, repeats of the same pair collapsed. ``skip_start`` drops
    the 0/1 that ComfyUI's progress registry sends when a node starts, before the node's own first update."""
    seqs: dict[str, list[tuple]] = {}
    for e in events:
        if e["prompt_id"] != prompt_id:
            continue
        seq = seqs.setdefault(e["node"], [])
        pair = (e["value"], e["max"])
        if skip_start and not seq and pair == (0, 1):
            continue
        if not seq or seq[-1] != pair:
            seq.append(pair)
    return {k: v for k, v in seqs.items() if v}


def _backwards(seqs: dict[str, list[tuple]]) -> list[str]:
    found = []
    for node, seq in seqs.items():
        for (v0, m0), (v1, m1) in zip(seq, seq[1:]):
            if v1 < v0:
                found.append(f"node {node}: value went back {v0}/{m0} -> {v1}/{m1}")
            if m1 != m0:
                found.append(f"node {node}: max changed {v0}/{m0} -> {v1}/{m1}")
    return found


def _print_sequences(name: str, kind: str, seqs: dict[str, list[tuple]], types: dict[str, str]) -> None:
    for node, seq in seqs.items():
        print(f"[progress] {name} {kind} node {node} ({types.get(node, '?')}): " + " ".join(f"{v}/{m}" for v, m in seq))


def test_progress_never_goes_back(workflow_run):
    """Per node, over the run, as the frontend received it: ``value`` never decreases and ``max`` never
    changes, both in the ``progress`` events and in the node states of ``progress_state``."""
    run = workflow_run
    assert run.prompt_id is not None, f"{run.path.name}: never queued ({run.run_error})"
    types = {str(n["id"]): n["type"] for n in run.loaded}
    progress = _sequences(run.progress["progress"], run.prompt_id, skip_start=False)
    state = _sequences(run.progress["state"], run.prompt_id, skip_start=True)
    _print_sequences(run.path.stem, "progress", progress, types)
    _print_sequences(run.path.stem, "progress_state", state, types)
    assert progress, f"{run.path.name}: the page received no progress event for its run"
    problems = [f"progress: {p}" for p in _backwards(progress)] + [f"progress_state: {p}" for p in _backwards(state)]
    assert not problems, f"{run.path.name}:\n" + "\n".join(problems)


def test_progress_check_catches_a_bar_that_goes_back():
    """The check above on made-up events: a restart (value back), a new total, and ComfyUI's own 0/1 start."""
    events = [
        {"prompt_id": "p", "node": "11", "value": v, "max": m}
        for v, m in [(0, 1), (1, 10), (2, 10), (2, 10), (1, 10), (3, 20)]
    ] + [{"prompt_id": "other", "node": "11", "value": 0, "max": 5}]
    seqs = _sequences(events, "p", skip_start=True)
    assert seqs == {"11": [(1, 10), (2, 10), (1, 10), (3, 20)]}
    assert _backwards(seqs) == ["node 11: value went back 2/10 -> 1/10", "node 11: max changed 1/10 -> 3/20"]
    assert _backwards(_sequences(events, "p", skip_start=False))[0] == "node 11: max changed 0/1 -> 1/10"


def test_missing_node_dialog_is_seen(frontend, tmp_path):
    """The dialog check above does see the frontend's missing-nodes warning: a workflow naming a node type
    the server lacks raises it."""
    workflow = json.loads(UI[0].read_text())
    workflow["nodes"][0]["type"] = "TiPAINotInstalled"
    broken = tmp_path / "missing-node.json"
    broken.write_text(json.dumps(workflow))
    frontend.drop_file(broken)
    deadline = time.time() + 15
    while not frontend.dialogs() and time.time() < deadline:
        frontend.pump(0.2)
    assert any(MISSING_TEXTS[0] in d and "TiPAINotInstalled" in d for d in frontend.dialogs()), frontend.dialogs()


# --- the node search box --------------------------------------------------------------------------------


def test_search_offers_every_pack_node(frontend, pack_display_names):
    offered = frontend.search_nodes("TiPAI")
    missing = sorted(set(pack_display_names.values()) - set(offered))
    assert not missing, f"searching 'TiPAI' does not offer {missing}; it offers {offered}"
