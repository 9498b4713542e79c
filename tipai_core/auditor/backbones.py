"""Image–text backbones of the auditor A_s, loaded from local files only.

A backbone gives the two encoders of the paper:

    E_i(I) -> (e_I, z)   e_I ∈ R^D the global image embedding (unit norm),
                         z ∈ R^{h×w×D} the patch tokens projected into the same joint space (unit norm)
    E_t(p) -> e_t        e_t ∈ R^D the text embedding (unit norm)

and the CLIP temperature s = exp(logit_scale), so that the CLIP logit is s·⟨e_I, e_t⟩.

Two families are supported:

* open_clip: any architecture name known to open_clip (or registered from a config folder, such as
  the tiny ``configs/tipai-tiny-vit.json`` shipped here), weights from a local ``.safetensors`` file
  or from open_clip's own checkpoint format read with ``torch.load(weights_only=True)``.
  HPS-style checkpoints are open_clip checkpoints.
* transformers ``CLIPModel`` from a local directory (``config.json`` + safetensors weights + the
  tokenizer files), read with ``local_files_only=True`` and never ``trust_remote_code``.
  PickScore-style checkpoints are such directories.

Nothing here downloads: every path is local and a missing file raises FileNotFoundError naming it.
Heavy imports (open_clip, transformers) happen inside the loaders.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TINY_ARCH = "tipai-tiny-vit"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class ImageTextBackbone(nn.Module):
    """Common face of the backbones: E_i, E_t, s, and an identity the trained heads are checked against.

    Images come in as float [B,3,H,W] in [0,1]; the backbone resizes them to its input size (the whole
    frame, no crop, so that patch tokens map back onto the whole image) and normalises them.
    """

    kind: str = ""
    name: str = ""
    image_size: int = 224
    embed_dim: int = 0

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # -- the module whose forward is the image tower E_i; tests and the memory manager look at it
    @property
    def image_encoder(self) -> nn.Module:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def identity(self) -> dict[str, Any]:
        """What a heads file must match: family, architecture name and joint-space width D."""
        return {"kind": self.kind, "name": self.name, "embed_dim": int(self.embed_dim)}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(device=self.pixel_mean.device, dtype=torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        x = (x - self.pixel_mean) / self.pixel_std
        return x.to(self.dtype)

    def logit_scale(self) -> torch.Tensor:
        """s = exp(logit_scale), clipped at 100 as in CLIP training."""
        raise NotImplementedError

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_i: one forward of the image tower for the whole batch -> (e_I [B,D], z [B,h,w,D]), unit norm."""
        raise NotImplementedError

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """E_t: [T,D] unit-norm text embeddings."""
        raise NotImplementedError


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    """[B,N,D] patch tokens -> [B,h,w,D] (square grid, as ViTs use)."""
    b, n, d = tokens.shape
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"patch tokens do not form a square grid: {n} tokens")
    return tokens.reshape(b, side, side, d)


# ----------------------------------------------------------------------------- open_clip


class OpenClipBackbone(ImageTextBackbone):
    model: Any  # open_clip's CLIP: typed by duck (visual, transformer, ...), not by nn.Module
    kind = "open_clip"

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, embed_dim: int, mean, std) -> None:
        super().__init__(mean, std)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.embed_dim = int(embed_dim)
        visual = self.model.visual  # self.model is typed Any (duck-typed open_clip model)
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        # Patch tokens are only defined for ViT towers; other towers fall back to a 1×1 grid.
        self._has_tokens = hasattr(visual, "output_tokens") and hasattr(visual, "ln_post")
        if self._has_tokens:
            visual.output_tokens = True
        else:
            log.warning(
                "open_clip image tower %s exposes no patch tokens: S_R and risk maps use a 1x1 grid",
                type(visual).__name__,
            )

    @property
    def image_encoder(self) -> nn.Module:
        return self.model.visual

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().clamp(max=100.0).float()

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.model.visual
        out = visual(self.preprocess(images))
        if not self._has_tokens:
            pooled = out
            return F.normalize(pooled.float(), dim=-1), F.normalize(pooled.float(), dim=-1)[:, None, None, :]
        pooled, tokens = out
        if getattr(visual, "final_ln_after_pool", False) and getattr(visual, "attn_pool", None) is None:
            tokens = visual.ln_post(tokens)  # tokens skipped ln_post in this configuration
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return F.normalize(pooled.float(), dim=-1), F.normalize(_grid(tokens.float()), dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(list(prompts)).to(self.device)
        return F.normalize(self.model.encode_text(ids).float(), dim=-1)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def register_config_dir(folder: str | Path) -> None:
    """Make every open_clip model-config JSON in ``folder`` known by its file stem."""
    import open_clip

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"open_clip config folder not found: {folder}")
    open_clip.add_model_config(folder)


def known_archs() -> list[str]:
    """Every open_clip architecture name this install can build, the shipped tiny one first."""
    import open_clip

    register_config_dir(CONFIG_DIR)
    return [TINY_ARCH] + sorted(a for a in open_clip.list_models() if a != TINY_ARCH)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file: safetensors, or a torch checkpoint read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (expected one of {', '.join(WEIGHT_SUFFIXES)})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"unsupported weights file {path}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_open_clip(
    arch: str,
    weights: str | Path,
    *,
    config_dir: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> OpenClipBackbone:
    """Build open_clip architecture ``arch`` and load its weights from the local file ``weights``.

    ``config_dir`` registers extra model configs (the shipped tiny config folder is always registered).
    Architectures whose tokenizer or text tower lives on the HF hub need ``tokenizer_dir`` pointing at a
    local copy; they are refused otherwise rather than fetched.
    """
    import open_clip

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(
            f"open_clip weights for {arch!r} not found: {weights} (expected the file "
            f"{weights.name!r} in the folder {weights.parent}; weights are never downloaded)"
        )
    register_config_dir(CONFIG_DIR)
    if config_dir is not None:
        register_config_dir(config_dir)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; put its JSON config in a folder and pass "
            f"config_dir (shipped: {TINY_ARCH!r} in {CONFIG_DIR})"
        )
    text_cfg = cfg.get("text_cfg", {})
    hf_text = text_cfg.get("hf_model_name")
    if hf_text and not Path(hf_text).is_dir():
        raise ValueError(
            f"{arch!r} builds its text tower from the HF hub ({hf_text!r}); only local folders "
            f"are allowed, set text_cfg.hf_model_name to a local directory in the config"
        )
    # pretrained=None: open_clip must not resolve tags or hub names; we load the file ourselves
    # (and silence its "initialized randomly" warning, which is about to be untrue).
    quiet = _DropMessage("No pretrained weights loaded")
    logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(
            arch, pretrained=None, pretrained_text=False, pretrained_image=False, device="cpu"
        )
    finally:
        logging.getLogger().removeFilter(quiet)
    state = read_weights(weights)
    from open_clip.factory import convert_state_dict

    state = convert_state_dict(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match open_clip architecture {arch!r}: {exc}") from exc

    hf_tok = text_cfg.get("hf_tokenizer_name")
    ctx = int(text_cfg.get("context_length", 77))
    if hf_tok:
        if tokenizer_dir is None or not Path(tokenizer_dir).is_dir():
            raise FileNotFoundError(
                f"{arch!r} uses the HF tokenizer {hf_tok!r}: pass tokenizer_dir, a local folder "
                f"with its tokenizer files (got {tokenizer_dir})"
            )
        tokenizer = open_clip.tokenizer.HFTokenizer(str(tokenizer_dir), context_length=ctx)
    else:
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=ctx)
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(pp.get("mean", OPENAI_MEAN))
    std = tuple(pp.get("std", OPENAI_STD))
    model.eval().requires_grad_(False)
    return OpenClipBackbone(model, tokenizer, arch, cfg["embed_dim"], mean, std).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- transformers CLIPModel


class HFClipBackbone(ImageTextBackbone):
    model: Any  # transformers' CLIPModel
    kind = "hf_clip"

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, mean, std) -> None:
        super().__init__(mean, std)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        config = self.model.config  # self.model is typed Any (transformers' CLIPModel)
        self.image_size = int(config.vision_config.image_size)
        self.embed_dim = int(config.projection_dim)
        self.context_length = int(config.text_config.max_position_embeddings)

    @property
    def image_encoder(self) -> nn.Module:
        return self.model.vision_model

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().clamp(max=100.0).float()

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vm = self.model.vision_model
        out = vm(pixel_values=self.preprocess(images))
        pooled = self.model.visual_projection(out.pooler_output)
        tokens = self.model.visual_projection(vm.post_layernorm(out.last_hidden_state[:, 1:]))
        return F.normalize(pooled.float(), dim=-1), F.normalize(_grid(tokens.float()), dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        out = self.model.text_model(
            input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
        )
        return F.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)


HF_REQUIRED = ("config.json",)
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def load_hf_clip(
    model_dir: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> HFClipBackbone:
    """A transformers CLIPModel (PickScore/HPS-style) from a local directory, never from the hub."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"CLIP model folder not found: {model_dir} (expected config.json, model.safetensors and tokenizer files)"
        )
    for name in HF_REQUIRED:
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} is missing: a transformers CLIPModel folder needs it")
    if not list(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"no .safetensors weights in {model_dir} (only safetensors are loaded)")
    if not any((model_dir / n).is_file() for n in HF_TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer in {model_dir}: expected {' or '.join(HF_TOKENIZER_FILES)}")
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False, use_safetensors=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    mean, std = OPENAI_MEAN, OPENAI_STD
    pp = model_dir / "preprocessor_config.json"
    if pp.is_file():
        cfg = json.loads(pp.read_text())
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    model.eval().requires_grad_(False)
    return HFClipBackbone(model, tokenizer, model_dir.name, mean, std).to(device=device, dtype=dtype)


def load_backbone(path: str | Path, *, arch: str | None = None, **kwargs: Any) -> ImageTextBackbone:
    """Dispatch on what ``path`` is: a folder -> transformers CLIPModel; a file -> open_clip ``arch``."""
    path = Path(path)
    if path.is_dir():
        return load_hf_clip(path, **{k: v for k, v in kwargs.items() if k in ("device", "dtype")})
    if arch is None:
        if not path.exists():
            raise FileNotFoundError(f"backbone not found: {path}")
        raise ValueError(f"{path} is an open_clip weights file: pass arch=<open_clip architecture name>")
    return load_open_clip(arch, path, **kwargs)
