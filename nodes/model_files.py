"""Model files of the pack: ``models/tipai/``, registered with ComfyUI's folder_paths.

Names are resolved only through folder_paths (never by joining user strings into paths), only
safetensors, ONNX and JSON are listed, and a missing file names the folder and the file.
"""

from __future__ import annotations

import os

import folder_paths

FOLDER = "tipai"
EXTENSIONS = {".safetensors", ".onnx", ".json"}
NONE = "none"


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


def folders() -> list[str]:
    register()
    return list(folder_paths.get_folder_paths(FOLDER))


def list_files(suffix: str = ".safetensors", optional: bool = False) -> list[str]:
    register()
    names = sorted(n for n in folder_paths.get_filename_list(FOLDER) if n.endswith(suffix))
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
