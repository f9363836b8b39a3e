"""The package's imports point down the layers that docs/layout.md describes: no subpackage imports one above it."""

import ast

from helpers import REPO

PACKAGE = REPO / "src" / "eeve_sft"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
# The subpackages each one may import; the shared top-level modules are open to all.
ALLOWED = {
    "speech_level": set(),
    "training": set(),
    "inference": {"training", "speech_level", "retrieval"},
    "evaluation": {"inference", "training", "speech_level"},
    "retrieval": {"speech_level"},
    "data_prep": {"inference", "retrieval", "speech_level", "training", "evaluation"},
}
TOP_LEVEL_ALLOWED = {"speech_level"}


def imported_subpackages(path, text: str | None = None) -> set[str]:
    """The eeve_sft subpackages the module at `path` (or `text` standing there) imports, relative or absolute, at the
    top or inside a function."""
    relative_to = path.relative_to(PACKAGE).parts[:-1]  # the package the file is in, below eeve_sft
    found = set()
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(relative_to[: len(relative_to) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts + [alias.name] for alias in node.names] if not node.module else [parts]
            elif node.module and node.module.split(".")[0] == "eeve_sft":
                names = [node.module.split(".")[1:]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "eeve_sft"]
        found |= {parts[0] for parts in names if parts and parts[0] in SUBPACKAGES}
    return found


def test_every_subpackage_has_its_allowed_imports_listed():
    assert sorted(ALLOWED) == SUBPACKAGES


def test_no_module_imports_a_subpackage_above_its_own():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        own = parts[0] if len(parts) > 1 else None
        allowed = ALLOWED[own] | {own} if own else TOP_LEVEL_ALLOWED
        wrong += [f"{path.relative_to(PACKAGE)} imports {name}" for name in imported_subpackages(path) - allowed]
    assert wrong == []


def test_an_import_back_up_is_found():
    module = PACKAGE / "inference" / "export.py"
    text = module.read_text(encoding="utf-8")
    assert "evaluation" not in imported_subpackages(module, text)
    for line in ("from ..evaluation.markdown import render_markdown", "from eeve_sft.evaluation import politeness"):
        assert "evaluation" in imported_subpackages(module, text + "\n" + line + "\n")
    assert "evaluation" in imported_subpackages(module, text + "\nfrom .. import evaluation\n")
