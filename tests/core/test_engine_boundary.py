"""The architecture's rules, checked on every module of tipai_core (found by walking the package).

- the library never imports ComfyUI, and inside tipai_core imports are relative (the pack loads it
  as ``<pack>.tipai_core``);
- every module imports alone, and the module import graph has no cycle;
- no runtime module imports ``train/`` (trainers depend on the library, never the reverse);
- trainers and evaluations call library functions, never another command's ``main``;
- nothing outside ``tests/`` imports from ``tests/``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "tipai_core"
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes"}
# command-line layers: they may import the library, the library may not import them
COMMANDS = ("train", "eval")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imported_modules(name: str, path: Path, *, type_checking: bool = False) -> set[str]:
    """The tipai_core modules ``name`` imports (TYPE_CHECKING blocks left out unless asked for)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[: len(package) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
        candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        out.update(c for c in candidates if c in MODULES)
    return out


def _layer(module: str) -> str:
    """The stage folder of a module: ``tipai_core.loop.audit_step`` -> ``loop`` ('' for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_walk_finds_every_stage():
    stages = {n.split(".")[1] for n in MODULES if n.count(".") >= 1}
    expected = {
        "protocols",
        "diffusion",
        "loop",
        "mining",
        "editing",
        "auditor",
        "guard",
        "policy",
        "records",
        "testing",
        "train",
        "eval",
        "worlds",
    }
    assert expected <= stages, f"missing stages: {expected - stages}"
    assert len(MODULES) > 60


@pytest.mark.parametrize("name", sorted(MODULES))
def test_sources_use_relative_imports_and_no_comfy(name):
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert "tipai_core" not in roots, f"{name} imports tipai_core absolutely"
        assert "tests" not in roots, f"{name} imports from tests/"
        assert not roots & FORBIDDEN, f"{name} imports {roots & FORBIDDEN}"


def test_no_runtime_module_imports_the_commands():
    for name, path in MODULES.items():
        layer = _layer(name)
        if layer in COMMANDS or layer == "worlds":
            continue
        bad = {m for m in imported_modules(name, path, type_checking=True) if _layer(m) in COMMANDS}
        assert not bad, f"{name} (runtime) imports {sorted(bad)}"


def test_commands_never_call_another_commands_main():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                for a in node.names:
                    assert (
                        a.name != "main"
                        or node.module.split(".")[-1] not in ("__main__",)
                        and not node.module.startswith(COMMANDS)
                    ), f"{name} imports main from {node.module}"


def test_the_module_import_graph_has_no_cycle():
    graph = {name: imported_modules(name, path) - {name} for name, path in MODULES.items()}
    # a package's __init__ re-exporting its modules is not a cycle with them: drop parent->child edges
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_nothing_outside_tests_imports_from_tests():
    for folder in ("tipai_core", "nodes", "benchmarks", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    assert node.module.split(".")[0] != "tests", f"{path} imports {node.module}"
                if isinstance(node, ast.Import):
                    assert all(a.name.split(".")[0] != "tests" for a in node.names), f"{path} imports tests"


def test_every_module_imports_alone_as_a_subpackage_of_the_pack(tmp_path):
    # the ComfyUI pack imports the library as <pack>.tipai_core; each module in a fresh interpreter
    # state (a cleared module table) so that one module's import never hides another's missing import
    pack = tmp_path / "somepack"
    pack.mkdir()
    (pack / "__init__.py").write_text("")
    (pack / "tipai_core").symlink_to(CORE)
    names = [n for n in sorted(MODULES) if not n.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, r'{tmp_path}')\n"
        "base = set(sys.modules)\n"
        "failed = []\n"
        f"for m in {names!r}:\n"
        "    for k in [k for k in sys.modules if k.startswith('somepack')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module('somepack.' + m)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{m}: {exc!r}')\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r} or n == 'tipai_core')\n"
        "print(failed)\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    failed, bad = proc.stdout.strip().splitlines()[-2:]
    assert failed == "[]", failed
    assert bad == "[]", bad


def test_the_shipped_implementations_satisfy_the_loop_protocols():
    from tipai_core import protocols as pr
    from tipai_core.testing.synthetic import make_world, world_suite

    world = make_world("eps")
    suite = world_suite(world)
    pairs = [
        (world.denoiser, pr.Denoiser),
        (suite.decoder, pr.AuditDecoder),
        (suite.miner, pr.Miner),
        (suite.auditor, pr.Auditor),
        (suite.editor, pr.Editor),
        (suite.policy, pr.Policy),
        (suite.guard, pr.Guard),
    ]
    for obj, proto in pairs:
        assert isinstance(obj, proto), f"{type(obj).__name__} is not a {proto.__name__}"
    assert not isinstance(world.denoiser, pr.Auditor)
