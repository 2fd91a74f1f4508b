"""module_utils/ stays readable in an afternoon: no function over 60 lines, no class over 300
(issue 24). A longer one is split by responsibility, not exempted."""
from __future__ import annotations

import ast

from conftest import REPO_ROOT

MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300


def oversized() -> list[str]:
    found = []
    for path in sorted((REPO_ROOT / "module_utils").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            limit = (MAX_FUNCTION_LINES if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     else MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else None)
            if limit is not None and node.end_lineno - node.lineno + 1 > limit:
                found.append(f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    return found


def test_no_function_or_class_in_module_utils_is_too_long() -> None:
    assert len(list((REPO_ROOT / "module_utils").glob("*.py"))) > 10
    assert oversized() == []
