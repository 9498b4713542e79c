"""Driving ComfyUI's own frontend (the PyPI ``comfyui-frontend-package`` the server serves) in a real
chromium through playwright's sync API, the way a user does: drop a file on the canvas, press Run,
look at the nodes.

What the page is asked comes from the frontend's own objects (``window.app``: the ComfyApp, its
LiteGraph ``graph`` and ``canvas``, its ``api`` event target); the selectors and texts below were read
from the frontend bundle of comfyui-frontend-package 1.32.9 (its source maps ship the sources):

- a dropped file is read by a ``drop`` listener on ``document`` (``app.ts: addDropHandler``), so a
  ``drop`` on the canvas, which bubbles there, is what a user's drop is;
- the Run button is the main button of the split button ``[data-testid="queue-button"]``;
- the missing-nodes dialog lists its nodes in ``.comfy-missing-nodes`` ("This workflow has missing
  nodes"), the missing-models dialog in ``.comfy-missing-models`` ("When loading the graph, the
  following models were not found");
- the node search box (double-click on empty canvas) is ``.comfy-vue-node-search-box``, its options
  ``.option-container`` with the display name first in ``.option-display-name``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import browser as browser_setup  # scripts/browser.py: scripts/ is on pytest's pythonpath

# Texts of the two warning dialogs (en locale of the bundle) and the classes of their lists.
MISSING_TEXTS = ("This workflow has missing nodes", "When loading the graph, the following models were not found")
MISSING_SELECTORS = (".comfy-missing-nodes", ".comfy-missing-models")
# Settings of a returning user: a new one (no settings yet) gets the template browser on top of the canvas.
USER_SETTINGS = {"Comfy.TutorialCompleted": True}
VIEWPORT = {"width": 1600, "height": 1000}
PACK_WORDS = ("tipai", "comfyui-tipai")


@dataclass
class Frontend:
    """One page of the frontend, with what it reported: uncaught errors and console errors."""

    page: Any  # playwright.sync_api.Page
    url: str
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[dict] = field(default_factory=list)  # {"text", "url"}: the message and its source

    # --- waiting -------------------------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = 120) -> None:
        """The app has set itself up (``window.app`` is published only after ``app.setup``), has loaded
        its start-up graph (so that load cannot land on top of ours) and shows the Run button."""
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && window.app.api"
            " && document.querySelector('#graph-canvas') && window.app.graph.nodes.length > 0",
            timeout=timeout_s * 1000,
        )
        self.run_button().wait_for(state="visible", timeout=timeout_s * 1000)
        self.settle()

    def settle(self) -> None:
        """Two drawn frames, so sizes computed on draw (node bounds, DOM widgets) are current."""
        self.page.evaluate(
            "() => new Promise(r => { window.app.graph.setDirtyCanvas(true, true);"
            " requestAnimationFrame(() => requestAnimationFrame(() => r())); })"
        )

    # --- the user's actions --------------------------------------------------------------------------------

    def run_button(self):
        return self.page.get_by_test_id("queue-button").get_by_role("button", name="Run", exact=True)

    def drop_file(self, path: Path, timeout_s: float = 60) -> None:
        """Drop ``path`` on the canvas as a file drag from the desktop does (dragenter, dragover, drop with a
        DataTransfer holding a File), then wait until the graph holds exactly the file's nodes."""
        text = path.read_text()
        ids = sorted(n["id"] for n in json.loads(text)["nodes"])
        transfer = self.page.evaluate_handle(
            """([name, text]) => {
                const dt = new DataTransfer();
                dt.items.add(new File([text], name, {type: 'application/json'}));
                return dt;
            }""",
            [path.name, text],
        )
        canvas = self.page.locator("#graph-canvas")
        box = canvas.bounding_box()
        at = {"clientX": box["x"] + box["width"] / 2, "clientY": box["y"] + box["height"] / 2}
        for kind in ("dragenter", "dragover", "drop"):
            canvas.dispatch_event(kind, {"dataTransfer": transfer, "bubbles": True, "cancelable": True, **at})
        self.page.wait_for_function(
            "(ids) => JSON.stringify(window.app.graph.nodes.map(n => n.id).sort((a, b) => a - b))"
            " === JSON.stringify(ids)",
            arg=ids,
            timeout=timeout_s * 1000,
        )
        # A node with an upload button (LoadImage) shows its image a moment later and grows to fit it.
        with contextlib.suppress(Exception):
            self.page.wait_for_function(
                "() => window.app.graph.nodes.filter(n => (n.widgets ?? []).some(w => w.name === 'upload'))"
                ".every(n => (n.imgs ?? []).length > 0)",
                timeout=15_000,
            )
        self.settle()

    def press_run(self, timeout_s: float = 60) -> dict:
        """Click Run; return the server's answer to the frontend's POST /api/prompt (status and body)."""
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/api/prompt"),
            timeout=timeout_s * 1000,
        ) as answer:
            self.run_button().click()
        response = answer.value
        try:
            body = response.json()
        except Exception:  # a non-JSON error page: keep its text for the message
            body = {"text": response.text()}
        return {"status": response.status, "body": body}

    def fit_view(self) -> None:
        """The '.' key (Comfy.Canvas.FitView): every node on screen, so each one is drawn (the frontend
        attaches output images to a node when it draws it)."""
        x, y = self.empty_canvas_point()
        self.page.mouse.click(x, y)  # the key is the canvas's own: it needs the focus
        self.page.keyboard.press(".")
        self.settle()

    def view(self) -> dict:
        return dict(
            self.page.evaluate("() => ({offset: [...window.app.canvas.ds.offset], scale: window.app.canvas.ds.scale})")
        )

    def set_view(self, view: dict) -> None:
        """Back to a view the user had (for a screenshot after fit_view): the canvas's offset and zoom."""
        self.page.evaluate(
            "(v) => { window.app.canvas.ds.offset = v.offset; window.app.canvas.ds.scale = v.scale; }", view
        )
        self.settle()

    def empty_canvas_point(self) -> tuple[float, float]:
        """A point of the page over empty canvas (no node, no group), searched on a grid."""
        point = self.page.evaluate(
            """() => {
                const el = document.querySelector('#graph-canvas');
                const r = el.getBoundingClientRect();
                for (let fy = 0.3; fy < 0.95; fy += 0.05) {
                    for (let fx = 0.3; fx < 0.95; fx += 0.05) {
                        const x = r.width * fx, y = r.height * fy;
                        const hit = document.elementFromPoint(r.left + x, r.top + y);
                        if (hit !== el) continue;  // a panel, menu or DOM widget is there
                        const [cx, cy] = window.app.canvas.ds.convertOffsetToCanvas([x, y]);
                        if (window.app.graph.getNodeOnPos(cx, cy)) continue;
                        if (window.app.graph.getGroupOnPos && window.app.graph.getGroupOnPos(cx, cy)) continue;
                        return [r.left + x, r.top + y];
                    }
                }
                return null;
            }"""
        )
        assert point, "no empty spot on the canvas to double-click"
        return point[0], point[1]

    def search_nodes(self, query: str, timeout_s: float = 30) -> list[str]:
        """Double-click empty canvas, type ``query`` in the node search box; return the offered display names."""
        x, y = self.empty_canvas_point()
        self.page.mouse.dblclick(x, y)
        box = self.page.locator(".comfy-vue-node-search-box input").first
        box.wait_for(state="visible", timeout=timeout_s * 1000)
        box.fill(query)
        options = self.page.locator(".comfy-vue-node-search-box .option-container")
        # the box answers after its 100 ms debounce; wait until every offered name matches the query's results
        self.page.wait_for_function(
            """(q) => {
                const opts = document.querySelectorAll('.comfy-vue-node-search-box .option-container');
                return opts.length > 0 && [...opts].some(o => o.innerText.toLowerCase().includes(q.toLowerCase()));
            }""",
            arg=query,
            timeout=timeout_s * 1000,
        )
        self.pump(0.3)  # one more debounce tick, so the list is the final one
        names = options.evaluate_all(
            "els => els.map(e => e.querySelector('.option-display-name > div').innerText"
            ".replace(/\\u00a0/g, ' ').trim())"
        )
        return list(names)

    # --- what the page shows -------------------------------------------------------------------------------

    def dialogs(self) -> list[str]:
        """The text of every visible dialog, and of any missing-nodes/models list or error toast."""
        return list(
            self.page.evaluate(
                """(sels) => {
                    const shown = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
                    const found = [];
                    for (const e of document.querySelectorAll('[role="dialog"], .p-dialog, ' + sels.join(', ')))
                        if (shown(e)) found.push(e.innerText.trim().slice(0, 500));
                    for (const e of document.querySelectorAll('.p-toast-message-error'))
                        if (shown(e)) found.push('error toast: ' + e.innerText.trim().slice(0, 500));
                    return [...new Set(found)];
                }""",
                list(MISSING_SELECTORS),
            )
        )

    def nodes(self) -> list[dict]:
        """Every node of the graph as the frontend holds it: bounds (LiteGraph's, title bar included),
        the values of its serialised widgets in order (the order ``configure`` fills them from
        ``widgets_values``), combo widgets with their options, the number of images it shows, and per
        widget the text of its value and the text it shows (``preview`` of PreviewAny among them)."""
        return list(
            self.page.evaluate(
                """() => window.app.graph.nodes.map(n => {
                    const widgets = n.widgets ?? [];
                    const str = v => (typeof v === 'string' ? v : (v == null ? '' : String(v)));
                    // what the widget holds, and what it draws: a DOM widget's element (PreviewAny's
                    // markdown is rendered by an editor, its source kept in a hidden textarea)
                    const shown = w => str(w.element ? (w.element.innerText ?? w.element.value) : w.value);
                    return {
                        id: n.id, type: n.type, title: n.title,
                        bounds: Array.from(n.getBounding()),
                        widgets_values: widgets.filter(w => w.serialize !== false).map(w => w.value ?? null),
                        widget_names: widgets.filter(w => w.serialize !== false).map(w => w.name),
                        combos: widgets.filter(w => w.type === 'combo').map(w => ({
                            name: w.name, value: w.value,
                            options: typeof w.options?.values === 'function'
                                ? w.options.values() : (w.options?.values ?? []),
                            linked: !!(n.inputs ?? []).find(i => i.widget?.name === w.name && i.link != null),
                        })),
                        widget_texts: Object.fromEntries(widgets.map(w => [w.name, str(w.value)])),
                        widget_shown: Object.fromEntries(widgets.map(w => [w.name, shown(w)])),
                        imgs: (n.imgs ?? []).length,
                    };
                })"""
            )
        )

    def watch_progress(self) -> None:
        """Record the ``progress`` and ``progress_state`` events the frontend's api dispatches (from the
        server's websocket), in order, in ``window.__tipaiProgress``."""
        self.page.evaluate(
            """() => {
                const rec = window.__tipaiProgress = {progress: [], state: []};
                window.app.api.addEventListener('progress', e => rec.progress.push({
                    prompt_id: e.detail.prompt_id, node: String(e.detail.node),
                    value: e.detail.value, max: e.detail.max}));
                window.app.api.addEventListener('progress_state', e => {
                    for (const [id, s] of Object.entries(e.detail.nodes)) rec.state.push({
                        prompt_id: e.detail.prompt_id, node: String(s.display_node_id ?? id),
                        value: s.value, max: s.max, state: s.state});
                });
            }"""
        )

    def progress(self) -> dict:
        return dict(self.page.evaluate("() => window.__tipaiProgress"))

    def wait_images(self, node_ids: list, timeout_s: float = 30) -> None:
        """Wait (at most ``timeout_s``) until each node in ``node_ids`` shows an image; never raises."""
        with contextlib.suppress(Exception):
            self.page.wait_for_function(
                "(ids) => ids.every(id => (window.app.graph.getNodeById(id)?.imgs ?? []).length > 0)",
                arg=node_ids,
                timeout=timeout_s * 1000,
            )

    def errors_about_pack(self) -> list[str]:
        """Console errors that name the pack, less failed loads from other sites: the frontend asks the
        Comfy Registry (api.comfy.org/comfy-nodes/<node id>/node) which pack each custom node of a
        workflow comes from, and on this closed network (or for a pack not in the registry) those fail."""
        return [
            f"{e['text']} ({e['url']})"
            for e in self.console_errors
            if any(w in f"{e['text']} {e['url']}".lower() for w in PACK_WORDS)
            and not (e["url"] and not e["url"].startswith(self.url) and e["text"].startswith("Failed to load resource"))
        ]

    def pump(self, seconds: float) -> None:
        """Let the page (and playwright's event handlers) run for a while."""
        self.page.wait_for_timeout(seconds * 1000)


@contextlib.contextmanager
def open_frontend(chromium_browser, url: str) -> Iterator[Frontend]:
    """A fresh browser context (no stored workflow or settings of an earlier page) at ``url``, ready."""
    context = chromium_browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        front = Frontend(page=page, url=url)

        def on_console(msg) -> None:
            if msg.type == "error":
                front.console_errors.append({"text": msg.text, "url": msg.location.get("url", "")})

        page.on("pageerror", lambda exc: front.page_errors.append(str(exc)))
        page.on("console", on_console)
        page.goto(url, wait_until="domcontentloaded")
        front.wait_ready()
        yield front
    finally:
        context.close()


def launch(playwright) -> Any:
    """Debian's chromium (scripts/browser.py), never a browser playwright would download."""
    return playwright.chromium.launch(
        executable_path=str(browser_setup.CHROMIUM), args=browser_setup.LAUNCH_ARGS, headless=True
    )


def wait_history(server, front: Frontend, prompt_id: str, timeout_s: float) -> dict:
    """Poll ``GET /history/<id>`` until the prompt is done, letting the page run between polls; return the
    entry, or raise AssertionError with ComfyUI's own messages when it failed or did not finish."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        status = (entry or {}).get("status", {})
        if status.get("status_str") == "error":
            raise AssertionError(f"prompt {prompt_id} failed: {json.dumps(status.get('messages'))[:4000]}")
        if status.get("completed"):
            return entry
        if server.proc is not None and server.proc.poll() is not None:
            raise AssertionError(f"ComfyUI died while running {prompt_id}:\n{server.log_tail()}")
        front.pump(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout_s:.0f} s:\n{server.log_tail()}")
