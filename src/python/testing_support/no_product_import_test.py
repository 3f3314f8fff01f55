"""No product module imports test plumbing: testing_support, the reliability harness, the
benchmarks or a conftest.

Product modules are read, never run: each is parsed and its import statements collected (relative
ones resolved against its package), so a module that only imports plumbing inside a function or
under `if TYPE_CHECKING:` is caught as well. The product sources are this test's dependencies
(BUILD), so they are the files beside it in the sandbox; test files (`*_test.py`, `conftest.py`)
are not product.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
# Top-level packages that exist for tests and benchmarks only.
PLUMBING = ("testing_support", "reliability", "benchmarks", "launcher_checks", "monitoring_checks")
# The packages the shipped programs are built from; each must be here for the check to mean much.
PROGRAMS = ("gateway", "model_server", "export", "local_stack", "clothing_preproc", "clothing_settings")


def is_test_file(path: Path) -> bool:
    return path.name == "conftest.py" or path.name.endswith("_test.py") or path.name.startswith("test_")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool) -> set[str]:
    """Every module an import statement in `source` names (for `from a import b`: `a` and `a.b`)."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_plumbing(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in PLUMBING or "conftest" in parts


def plumbing_imports(root: Path) -> dict[str, list[str]]:
    """module -> the plumbing it imports, for every product module under `root`."""
    offenders: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        if is_test_file(path) or name.split(".")[0] in PLUMBING:
            continue
        modules = imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
        bad = sorted(m for m in modules if is_plumbing(m))
        if bad:
            offenders[name] = bad
    return offenders


def product_packages(root: Path) -> set[str]:
    return {
        module_name(p, root).split(".")[0]
        for p in root.rglob("*.py")
        if not is_test_file(p) and module_name(p, root).split(".")[0] not in PLUMBING
    }


def test_the_shipped_programs_sources_are_the_ones_checked() -> None:
    assert set(PROGRAMS) <= product_packages(SOURCE_ROOT)


def test_no_product_module_imports_test_plumbing_or_a_conftest() -> None:
    assert plumbing_imports(SOURCE_ROOT) == {}


def test_the_check_names_each_kind_of_plumbing_import(tmp_path: Path) -> None:
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "clean.py").write_text("import os\nfrom shop import helpers\n")
    (package / "absolute.py").write_text("from testing_support.ports import free_port\n")
    (package / "lazy.py").write_text("def f():\n    import reliability.load\n")
    (package / "relative.py").write_text("from .conftest import image_host\n")
    (package / "dotted.py").write_text("from shop import conftest\n")
    (package / "shop_test.py").write_text("from testing_support import stack\n")  # a test may
    (package / "conftest.py").write_text("from testing_support.ports import free_port\n")

    assert plumbing_imports(tmp_path) == {
        "shop.absolute": ["testing_support.ports", "testing_support.ports.free_port"],
        "shop.dotted": ["shop.conftest"],
        "shop.lazy": ["reliability.load"],
        "shop.relative": ["shop.conftest", "shop.conftest.image_host"],
    }
