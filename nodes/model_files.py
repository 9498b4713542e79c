"""Model files of the pack: ``models/tipai/`` and ``models/LLM/``, registered with ComfyUI's folder_paths.

Names are resolved only through folder_paths (never by joining user strings into paths), only
safetensors, ONNX and JSON are listed in models/tipai, each list offers only files of its kind
(``file_kind`` reads the kind from the file's own header), and a missing file names the folder and the
file. models/LLM holds the local language model of TiPAI Region Prompt: ``.gguf`` files and
transformers folders (config.json + safetensors).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache

import folder_paths

from ..tipai_core.auditor.heads import FORMAT_NAME as HEADS_FORMAT
from ..tipai_core.editing.learned_file import EDITOR_FORMAT
from ..tipai_core.guard.calibration_file import CALIBRATION_SCHEMA
from ..tipai_core.policy.policy_net import POLICY_SCHEMA

log = logging.getLogger(__name__)

FOLDER = "tipai"
EXTENSIONS = {".safetensors", ".onnx", ".json"}
NONE = "none"
# What a file in models/tipai is, read from its own header (never from its name), so that each list
# offers only files of its kind: a backbone is never offered as heads, a policy's JSON never as calibration.
KINDS = ("backbone", "heads", "lpips", "policy", "calibration", "editor")
_MAX_JSON_BYTES = 4 << 20  # calibration files are a few kB; a bigger JSON is not one
_LPIPS_PREFIXES = ("features.", "net.", "lin", "scaling_layer.")  # torchvision features.* or lpips-format


def register() -> None:
    """Add ``models/tipai`` (and keep any paths a user's extra_model_paths.yaml gave it)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[FOLDER]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | EXTENSIONS)
    else:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))


LLM_FOLDER = "LLM"  # the name other LLM node packs use too, so one models/LLM serves them all
LLM_EXTENSIONS = {".gguf"}


def register_llm() -> None:
    """Add ``models/LLM`` for .gguf files (and keep what ComfyUI, extra_model_paths.yaml or another pack gave it;
    a folder registered for every extension, an empty set, stays so)."""
    default = os.path.join(folder_paths.models_dir, LLM_FOLDER)
    if LLM_FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[LLM_FOLDER]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[LLM_FOLDER] = (paths, set(exts) | LLM_EXTENSIONS if exts else set())
    else:
        folder_paths.folder_names_and_paths[LLM_FOLDER] = ([default], set(LLM_EXTENSIONS))


def llm_folders() -> list[str]:
    register_llm()
    return list(folder_paths.get_folder_paths(LLM_FOLDER))


def _is_llm_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        n.endswith(".safetensors") for n in os.listdir(path)
    )


def list_llm() -> list[str]:
    """What TiPAI Region Prompt's ``llm`` offers: the .gguf files of models/LLM (sub-folders too), then its
    sub-folders that hold a transformers model (config.json + safetensors) as ``<name>/``."""
    register_llm()
    files = sorted(n for n in folder_paths.get_filename_list(LLM_FOLDER) if n.lower().endswith(".gguf"))
    found = []
    for root in llm_folders():
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if os.path.isdir(os.path.join(root, name)) and _is_llm_folder(os.path.join(root, name)):
                    found.append(name + "/")
    return files + sorted(set(found))


def resolve_llm(name: str) -> str:
    """Full path of a ``list_llm`` choice, or a FileNotFoundError that names the folder and says what goes there."""
    register_llm()
    where = f"the models/{LLM_FOLDER} folder ({', '.join(llm_folders())})"
    what = "a .gguf file or a transformers folder (config.json + safetensors)"
    if not isinstance(name, str) or not name.strip():
        raise FileNotFoundError(f"TiPAI: no language model chosen; put {what} in {where} and pick it")
    if name.endswith("/"):
        for root in llm_folders():
            if os.path.isdir(root) and name[:-1] in os.listdir(root):  # a listed entry, never a joined path
                path = os.path.join(root, name[:-1])
                if os.path.isdir(path) and _is_llm_folder(path):
                    return path
    else:
        if not name.lower().endswith(".gguf"):
            raise FileNotFoundError(f"TiPAI: the language model '{name}' is not one the pack loads; it must be {what}")
        path = folder_paths.get_full_path(LLM_FOLDER, name)
        if path is not None:
            return path
    raise FileNotFoundError(
        f"TiPAI: the language model '{name}' was not found in {where}. Put {what} there and refresh."
    )


def llm_fingerprint(name: str) -> str:
    """What ComfyUI compares to re-run TiPAI Region Prompt: a model rewritten under the same name changes it."""
    try:
        path = resolve_llm(name)
    except FileNotFoundError:
        return str(name)
    files = [path] if os.path.isfile(path) else [os.path.join(path, n) for n in sorted(os.listdir(path))]
    stats = [(os.path.getmtime(f), os.path.getsize(f)) for f in files if os.path.isfile(f)]
    return f"{name}:{stats}"


def folders() -> list[str]:
    register()
    return list(folder_paths.get_folder_paths(FOLDER))


def _safetensors_kind(path: str) -> str | None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta, keys = f.metadata() or {}, list(f.keys())
    if meta.get("format") == HEADS_FORMAT:
        return "heads"
    if meta.get("schema") == POLICY_SCHEMA:
        return "policy"
    if meta.get("format") == EDITOR_FORMAT:
        return "editor"
    if keys and all(k.startswith(_LPIPS_PREFIXES) for k in keys):
        return "lpips"
    return "backbone"


def _json_kind(path: str) -> str | None:
    if os.path.getsize(path) > _MAX_JSON_BYTES:
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return "calibration" if isinstance(data, dict) and data.get("schema") == CALIBRATION_SCHEMA else None


@lru_cache(maxsize=1024)
def _kind_of(path: str, mtime: float, size: int) -> str | None:  # keyed by mtime and size: a rewrite re-reads
    try:
        if path.endswith(".safetensors"):
            return _safetensors_kind(path)
        if path.endswith(".json"):
            return _json_kind(path)
    except Exception as exc:  # an unreadable file is in no list; say why once
        log.warning("TiPAI: %s is not a readable model file, so no list offers it: %s", path, exc)
    return None


def file_kind(path: str) -> str | None:
    """The kind (one of ``KINDS``) of a models/tipai file, from its header; None when it is none of them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _kind_of(path, st.st_mtime, st.st_size)


def list_kind(kind: str, optional: bool = False) -> list[str]:
    """The models/tipai files of one kind (``KINDS``), sorted, with 'none' first when ``optional``."""
    if kind not in KINDS:
        raise ValueError(f"unknown model file kind {kind!r}; expected one of {KINDS}")
    register()
    names = []
    for name in sorted(folder_paths.get_filename_list(FOLDER)):
        path = folder_paths.get_full_path(FOLDER, name)
        if path is not None and file_kind(path) == kind:
            names.append(name)
    return ([NONE] if optional else []) + names


def list_hf_folders() -> list[str]:
    """Sub-folders of models/tipai that hold a transformers CLIPModel (a config.json)."""
    found = []
    for root in folders():
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if os.path.isfile(os.path.join(root, name, "config.json")):
                    found.append(name + "/")
    return found


def resolve(name: str, what: str) -> str:
    """Full path of ``name`` in models/tipai, or a FileNotFoundError that says where to put it."""
    register()
    if not isinstance(name, str) or not name.strip():
        raise FileNotFoundError(f"TiPAI: no {what} file chosen; put one in the models/{FOLDER} folder and pick it")
    if name.endswith("/"):
        for root in folders():
            if name[:-1] in os.listdir(root) if os.path.isdir(root) else []:
                path = os.path.join(root, name[:-1])
                if os.path.isfile(os.path.join(path, "config.json")):
                    return path
    else:
        if os.path.splitext(name)[1].lower() not in EXTENSIONS:
            raise FileNotFoundError(
                f"TiPAI: the {what} file '{name}' is not one the pack loads; models/{FOLDER} files must be "
                f"{', '.join(sorted(EXTENSIONS))} (or a transformers folder with config.json)"
            )
        path = folder_paths.get_full_path(FOLDER, name)
        if path is not None:
            return path
    raise FileNotFoundError(
        f"TiPAI: the {what} file '{name}' was not found in the models/{FOLDER} folder "
        f"({', '.join(folders())}). Put the file there (safetensors, ONNX or JSON) and refresh."
    )


def fingerprint(name: str, what: str) -> str:
    """What ComfyUI compares to re-run a node: a file rewritten under the same name changes its mtime and size."""
    if not name or name == NONE:
        return ""
    try:
        path = resolve(name, what)
        return f"{name}:{os.path.getmtime(path)}:{os.path.getsize(path)}"
    except (FileNotFoundError, OSError):
        return name
