"""Write the built-in default auditor: random weights of the shipped tiny open_clip config.

    python scripts/tiny_auditor.py <models/tipai folder>   (with the test host's Python)

It lets the demo and the host tests run the whole loop offline (no CLIP weights exist offline).
Its judgements are random: it shows the mechanics, not quality. Load it in the TiPAI Auditor
Loader as backbone 'tipai_tiny_auditor.safetensors' with arch 'tipai-tiny-vit'.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "tipai_tiny_auditor.safetensors"
RECIPE = "tiny-auditor-v1"
SEED = 0


def write(folder: Path) -> Path:
    import open_clip
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tipai_core.auditor.backbones import CONFIG_DIR, TINY_ARCH

    path = folder / NAME
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("tipai_recipe") == RECIPE:
                return path
    open_clip.add_model_config(str(CONFIG_DIR))
    torch.manual_seed(SEED)
    model = open_clip.create_model(TINY_ARCH, pretrained=None)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"tipai_recipe": RECIPE})
    tmp.replace(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(write(Path(sys.argv[1])))
