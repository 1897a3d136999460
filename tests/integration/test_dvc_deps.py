"""dvc.yaml lists every code dependency of every stage: the project files its command's stage function imports,
directly or through other project modules (at module level or inside a function: both run), and for the
package stage every file the Bento bundles. A stage whose deps omit one would not rerun when that file
changes, and dvc.lock would describe a run that its inputs no longer give."""

from __future__ import annotations

import ast
from pathlib import Path

import pathspec
import pytest
import yaml

from scoutless.serving.stage import package_folders
from tests.conftest import REPO

FOLDERS = package_folders(REPO)   # scoutless.models -> models, …


def module_file(module: str) -> Path | None:
    """The project file of `module` (a package's __init__.py), None outside the project."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        package = ".".join(parts[:depth])
        if package in FOLDERS:
            base = REPO.joinpath(FOLDERS[package], *parts[depth:])
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
            return None
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports anywhere in it (`from a import b` also names a.b, which may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def closure(modules: set[str]) -> set[Path]:
    """The project files of `modules` and of everything they import, transitively (with parent packages)."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += imported_modules(path)
    return seen


def command_modules() -> dict[str, set[str]]:
    """Per `scoutless` command, the project modules its function imports (its stage function's)."""
    tree = ast.parse((REPO / "scoutless" / "cli.py").read_text())
    out = {}
    for function in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for decorator in function.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", None) == "command":
                name = decorator.args[0].value if decorator.args else function.name.replace("_", "-")
                out[name] = {node.module for node in ast.walk(function)
                             if isinstance(node, ast.ImportFrom) and node.module}
    return out


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or (dep.endswith("/") and relative.startswith(dep)) for dep in deps)


def deps_of(stage: dict) -> list[str]:
    return [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage.get("do", stage).get("deps", [])]


@pytest.mark.parametrize("name", list(stages()))
def test_a_stage_depends_on_every_file_its_command_imports(name):
    stage = stages()[name]
    command = stage.get("do", stage)["cmd"].split()
    assert command[0] == "scoutless", f"{name}: {command}"
    modules = command_modules()[command[1]]
    files = closure(modules)
    assert files, f"{name}: `scoutless {command[1]}` imports no project module"
    missing = sorted(p.relative_to(REPO).as_posix() for p in files if not covered(p, deps_of(stage)))
    assert not missing, f"dvc.yaml stage {name} imports files its deps omit: {missing}"


def test_the_package_stage_depends_on_everything_the_bento_bundles():
    """The Bento bundles its include patterns, its requirements and the wheel, which is built from every
    package folder, pyproject.toml and README.md."""
    bento = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    include = pathspec.PathSpec.from_lines("gitwildmatch", bento["include"])   # as BentoML reads it
    # Only files of the checkout: nothing from the store (earlier Bentos hold a bentofile.yaml too) or the venv.
    assert not [pattern for pattern in ("bentofile.yaml", "serving/service.py", "params.yaml")
                if include.match_file(f".bentoml/bentos/scoutless/v1/src/{pattern}")]
    bundled = [path for path in REPO.rglob("*") if path.is_file() and ".venv" not in path.parts
               and ".bentoml" not in path.parts and include.match_file(path.relative_to(REPO).as_posix())]
    bundled.append(REPO / bento["python"]["requirements_txt"])
    bundled += [REPO / "pyproject.toml", REPO / "README.md"]
    bundled += [path for folder in FOLDERS.values() for path in (REPO / folder).rglob("*.py")]
    missing = sorted(p.relative_to(REPO).as_posix() for p in bundled if not covered(p, deps_of(stages()["package"])))
    assert not missing, f"the Bento bundles files the package stage's deps omit: {missing}"
