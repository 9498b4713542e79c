"""The ComfyUI HTTP calls on-policy TSPO needs: queue a workflow, wait for it, read its tournament logs.

Loopback servers only (127.0.0.1, localhost, ::1): training drives the user's own ComfyUI, never a remote one.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..records.tournament_log import LogStats, iter_records
from ..records.tournament_record import TournamentRecord

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ComfyClient:
    """The few ComfyUI HTTP calls on-policy training needs; loopback servers only."""

    def __init__(self, url: str):
        host = urllib.parse.urlparse(url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"--server {url}: on-policy TSPO only talks to servers on 127.0.0.1")
        self.url = url.rstrip("/")

    def _get(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def queue(self, graph: dict) -> str:
        """Queue an API-format workflow; returns its prompt id."""
        req = urllib.request.Request(
            self.url + "/prompt",
            data=json.dumps({"prompt": graph}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace")[:2000]
            raise RuntimeError(f"{self.url} refused the workflow: {reason}") from None

    def wait(self, prompt_id: str, timeout: float) -> dict:
        """Poll the history until the run completes; its history entry. Raises on failure or timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = json.loads(self._get(f"/history/{prompt_id}"))
            if prompt_id in hist:
                status = hist[prompt_id].get("status", {})
                if status.get("status_str") == "error":
                    messages = json.dumps(status.get("messages"))[:2000]
                    raise RuntimeError(f"{self.url}: run {prompt_id} failed: {messages}")
                if status.get("completed"):
                    return hist[prompt_id]
            time.sleep(0.2)
        raise TimeoutError(f"{self.url}: run {prompt_id} did not finish within {timeout:.0f} s")

    def log_lines(self, entry: dict) -> list[bytes]:
        """The JSONL lines of every tournament log a finished run's history entry names."""
        lines = []
        for out in entry.get("outputs", {}).values():
            for f in out.get("tipai_logs", []):
                if f["filename"].endswith(".records.jsonl"):
                    q = urllib.parse.urlencode(
                        {
                            "filename": f["filename"],
                            "subfolder": f.get("subfolder", ""),
                            "type": f.get("type", "output"),
                        }
                    )
                    lines += self._get(f"/view?{q}").splitlines()
        return lines


def prepare_template(graph: dict) -> dict[str, str]:
    """The ids of the nodes on-policy training sets: the TSPO Sampler, the samplers and the log node."""

    def find(cls: str) -> list[str]:
        return [k for k, v in graph.items() if v.get("class_type") == cls]

    ids = {"policy": find("TiPAITSPOSampler"), "sampler": find("TiPAIKSampler"), "log": find("TiPAISaveTournamentLog")}
    missing = [k for k, v in ids.items() if not v]
    if missing:
        raise ValueError(
            f"the workflow template needs a TiPAI TSPO Sampler, a TiPAI KSampler and a TiPAI Save "
            f"Tournament Log node; it has none of: {missing}"
        )
    return {k: v[0] for k, v in ids.items()}


def online_round(
    clients: list[ComfyClient],
    template: dict,
    ids: dict,
    policy_name: str,
    jobs: int,
    rng: random.Random,
    timeout: float,
    stats: LogStats,
) -> list[TournamentRecord]:
    """Queue ``jobs`` runs on every server (fresh seeds, the current policy file), then collect their records."""
    queued = []
    for c in clients:
        for _ in range(jobs):
            g = copy.deepcopy(template)
            g[ids["policy"]]["inputs"]["policy_file"] = policy_name
            g[ids["policy"]]["inputs"]["seed"] = rng.randrange(2**31)
            g[ids["sampler"]]["inputs"]["seed"] = rng.randrange(2**31)  # a new image, never ComfyUI's cached one
            g[ids["log"]]["inputs"]["filename_prefix"] = "tspo_online"
            queued.append((c, c.queue(g)))
    lines = []
    for c, pid in queued:
        lines += c.log_lines(c.wait(pid, timeout))
    # the records reader takes files: the round's lines go through one temporary log
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round.records.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        return list(iter_records([path], stats))
