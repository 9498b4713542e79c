"""What the node definitions offer: each model list only files of its kind (read from the files' own
headers; real files of each kind go into an extra models/tipai folder), `arch` the architectures
open_clip can build, and a tooltip on every input and output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tipai_core.auditor.heads import FORMAT_NAME
from tipai_core.guard.calibration_file import CALIBRATION_SCHEMA
from tipai_core.policy.policy_net import POLICY_SCHEMA


@pytest.fixture
def kinds_folder(comfy_inproc, tmp_path):
    import folder_paths

    t = {"w": torch.zeros(2, 2)}
    save_file(t, str(tmp_path / "my_heads.safetensors"), metadata={"format": FORMAT_NAME, "schema_version": "1"})
    save_file(t, str(tmp_path / "my_policy.safetensors"), metadata={"schema": POLICY_SCHEMA})
    save_file({"features.0.weight": torch.zeros(2, 3, 1, 1)}, str(tmp_path / "my_alexnet.safetensors"))
    save_file(
        {"visual.proj": torch.zeros(2, 2), "token_embedding.weight": t["w"]}, str(tmp_path / "my_clip.safetensors")
    )
    (tmp_path / "my_calibration.json").write_text(json.dumps({"schema": CALIBRATION_SCHEMA}))
    (tmp_path / "my_policy.json").write_text(json.dumps({"knobs": {}}))  # a policy's sidecar: no calibration
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 5)  # unreadable: in no list
    paths = folder_paths.folder_names_and_paths["tipai"][0]
    paths.append(str(tmp_path))
    try:
        yield tmp_path
    finally:
        paths.remove(str(tmp_path))


def _options(comfy_inproc, node_id: str, name: str) -> list:
    inputs = comfy_inproc.node_class(node_id).INPUT_TYPES()
    spec = {**inputs["required"], **inputs.get("optional", {})}[name]
    return list(spec[1]["options"]) if len(spec) > 1 and "options" in spec[1] else list(spec[0])


def test_each_list_offers_only_its_kind(comfy_inproc, kinds_folder, tiny_auditor):
    backbones = _options(comfy_inproc, "TiPAIAuditorLoader", "backbone")
    assert "my_clip.safetensors" in backbones and tiny_auditor in backbones
    assert not {"my_heads.safetensors", "my_policy.safetensors", "my_alexnet.safetensors"} & set(backbones)
    assert _options(comfy_inproc, "TiPAIAuditorLoader", "heads") == ["none", "my_heads.safetensors"]
    assert _options(comfy_inproc, "TiPAIAuditorLoader", "lpips_backbone") == ["none", "my_alexnet.safetensors"]
    assert _options(comfy_inproc, "TiPAITSPOSampler", "policy_file") == ["none", "my_policy.safetensors"]
    assert _options(comfy_inproc, "TiPAITournamentGuard", "calibration_file") == ["none", "my_calibration.json"]
    everything = sum((_options(comfy_inproc, "TiPAIAuditorLoader", n) for n in ("backbone", "heads")), [])
    assert "broken.safetensors" not in everything


def test_arch_is_the_list_open_clip_knows(comfy_inproc):
    import open_clip

    archs = _options(comfy_inproc, "TiPAIAuditorLoader", "arch")
    assert archs[0] == "tipai-tiny-vit" and "ViT-B-32" in archs
    assert set(archs) == set(open_clip.list_models()) | {"tipai-tiny-vit"}


def test_every_input_and_output_of_the_pack_has_a_tooltip(comfy_inproc, pack_node_ids):
    for node_id in pack_node_ids:
        schema = comfy_inproc.node_class(node_id).GET_SCHEMA()
        for item in [*schema.inputs, *schema.outputs]:
            name = getattr(item, "id", None) or getattr(item, "display_name", None)
            assert getattr(item, "tooltip", None), f"{node_id}: {name} has no tooltip"
