"""Copy the implementation's docstrings into the stubs, or check that they match.

IDEs read the stubs, not the implementation, so each public docstring must be
in both. The implementation is the source: run this after changing one, and
``make check`` runs it with ``--check``, which fails on any difference.

    python tools/stub_docs.py [--check]
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

STUBS = Path(__file__).resolve().parent.parent / "stubs" / "anygate"
Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def runtime_doc(owner: Any, name: str) -> str | None:
    obj = inspect.getattr_static(owner, name, None)
    if obj is not None and obj is getattr(object, name, None):
        return None  # object's own, as GateGuard.__new__: nothing to copy
    if isinstance(obj, property):
        obj = obj.fget
    elif isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return None
    # A class that does not write its own docstring inherits none here.
    if isinstance(obj, type) and "__doc__" not in vars(obj):
        return None
    return inspect.cleandoc(doc)


def definitions(body: list[ast.stmt], owner: Any) -> list[tuple[Definition, str | None]]:
    found: list[tuple[Definition, str | None]] = []
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((node, runtime_doc(owner, node.name)))
            if isinstance(node, ast.ClassDef):
                found += definitions(node.body, getattr(owner, node.name))
    return found


def stub_doc(node: Definition) -> str | None:
    doc = ast.get_docstring(node)
    return None if doc is None else inspect.cleandoc(doc)


def render(doc: str, indent: str) -> list[str]:
    lines = doc.splitlines()
    if len(lines) == 1:
        return [f'{indent}"""{doc}"""']
    body = [f"{indent}{line}" if line else "" for line in lines[1:]]
    return [f'{indent}"""{lines[0]}', *body, f'{indent}"""']


def rewrite(source: str, edits: list[tuple[Definition, str]]) -> str:
    lines = source.splitlines()
    for node, doc in sorted(edits, key=lambda edit: edit[0].body[0].lineno, reverse=True):
        first = node.body[0]
        indent = " " * (node.col_offset + 4)
        end = first.end_lineno or first.lineno
        if ast.get_docstring(node) is not None:
            # Replace the docstring in place.
            lines[first.lineno - 1 : end] = render(doc, indent)
        elif isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            # `def f(...) -> T: ...` becomes a body that is only the docstring.
            line = lines[first.lineno - 1]
            head = line[: first.col_offset].rstrip()
            lines[first.lineno - 1 : end] = [head, *render(doc, indent)]
        else:
            # Above the first statement, or above its decorators if it has any.
            decorators = getattr(first, "decorator_list", [])
            top = min([first.lineno, *(d.lineno for d in decorators)])
            lines[top - 1 : top - 1] = render(doc, indent)
    return "\n".join(lines) + "\n"


def main(check: bool) -> int:
    sys.path.insert(0, str(STUBS.parent.parent / "src"))
    stale: list[str] = []
    for path in sorted(STUBS.glob("*.pyi")):
        module_name = "anygate" if path.stem == "__init__" else f"anygate.{path.stem}"
        module = importlib.import_module(module_name)
        source = path.read_text()
        edits = [
            (node, doc)
            for node, doc in definitions(ast.parse(source).body, module)
            if doc is not None and stub_doc(node) != doc
        ]
        stale += [f"{path.name}: {node.name}" for node, _ in edits]
        if edits and not check:
            path.write_text(rewrite(source, edits))
    if check and stale:
        print("docstrings differ between the stubs and the implementation:")
        print("\n".join(f"  {name}" for name in stale))
        print("run: make stubs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
