"""Sphinx configuration for anygate's documentation (``make docs``)."""

from __future__ import annotations

import dataclasses
import pkgutil
from pathlib import Path
from typing import Any

from docutils.nodes import TextElement
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext import intersphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

import anygate
import anygate.asgi
import anygate.hypercorn
import anygate.uvicorn

HERE = Path(__file__).parent
logger = logging.getLogger(__name__)

project = "anygate"
author = "anygate's authors"
copyright = "anygate's authors"
release = anygate.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "_inventories", "conftest.py"]

# CHANGELOG.md's sections are H2 under its title; the page supplies the title.
suppress_warnings = ["myst.header"]

html_theme = "furo"
html_title = f"anygate {release}"

# Every cross-reference must resolve: `make docs` passes -n (nitpicky) and -W.
nitpicky = True
default_role = "py:obj"

# The public names are defined in private modules (anygate._gate, ...) and
# exported by the package: document and link them under the name users import.
for _name in anygate.__all__:
    _obj = getattr(anygate, _name)
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        _obj.__module__ = "anygate"


def analyze_public_names() -> None:
    """Let autodoc find the ``#:`` comments and the source order of the public names.

    autodoc reads attribute comments (``Holder``'s and ``GateStatistics``'
    fields) and the source order of members from the module that ``__module__``
    names, which is now ``anygate``: the package's ``__init__.py``, which only
    imports them. Its analyzer, which autodoc caches, is given what the private
    modules' analyzers found under the public names.
    """
    package = ModuleAnalyzer.for_module("anygate")
    package.analyze()
    public = set(anygate.__all__)
    for module in pkgutil.iter_modules(anygate.__path__, "anygate."):
        analyzer = ModuleAnalyzer.for_module(module.name)
        analyzer.analyze()
        for key, comment in analyzer.attr_docs.items():
            if key[0] in public:
                package.attr_docs[key] = comment
        for qualname, order in analyzer.tagorder.items():
            if qualname.split(".")[0] in public:
                package.tagorder[qualname] = order


analyze_public_names()

# The reference is generated from the docstrings, their single source. It is
# grouped by topic: reference.rst names each member in its section. The few
# classes documented with :members: list them in source order (which
# analyze_public_names() makes available): GateStatistics as its repr does.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Names that the signatures show but that are not part of the public API.
nitpick_ignore = [
    # Type variables of the decorators' and start_soon()'s signatures.
    ("py:class", "anygate._gate._T"),
    ("py:class", "anygate._gate._P"),
    ("py:class", "_PosArgsT"),
    ("py:class", "_T"),
    ("py:class", "_P"),
    ("py:class", "_P.args"),
    ("py:class", "_P.kwargs"),
    # start_soon() and start() take any object with a task group's two methods
    # (an anyio task group, a trio nursery): a protocol, described in their text.
    ("py:class", "anygate._tasks.TaskStarter"),
    ("py:class", "TaskStarter"),
    # Type variables of gated()'s signature.
    ("py:class", "anygate._tasks._G"),
    ("py:class", "anygate._tasks._T"),
    # anygate.uvicorn.serve() takes a uvicorn.Server, typed by a protocol of
    # the part it uses, so as not to import Uvicorn: described in its text.
    ("py:class", "anygate.uvicorn._Server"),
    ("py:class", "_Server"),
]

# Intersphinx without a network: the inventories of Python's, anyio's and
# trio's docs are committed in _inventories/, so the build works offline and
# from a fresh clone, and always resolves against the same targets. Fetching
# them at build time would fail here (no network beyond the package
# registries) and make every build depend on three websites. The links still
# point to the live sites. tools/inventories.py rebuilds the files from what
# the registries serve: Python's from Debian's python3.X-doc package, anyio's
# and trio's by building their docs sources from their sdists.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(HERE / "_inventories" / "python.inv")),
    "anyio": ("https://anyio.readthedocs.io/en/stable", str(HERE / "_inventories" / "anyio.inv")),
    "trio": ("https://trio.readthedocs.io/en/stable", str(HERE / "_inventories" / "trio.inv")),
}

# Signatures that autodoc cannot evaluate (they use names defined for type
# checkers only) keep their annotations as written: these are their targets.
ANNOTATION_TARGETS = {"TaskGroup": "anyio.abc.TaskGroup"}


def resolve_annotation(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: TextElement
) -> Any:
    target = ANNOTATION_TARGETS.get(node.get("reftarget", ""))
    if target is None:
        return None
    node["reftarget"] = target
    return intersphinx.missing_reference(app, env, node, contnode)


def public_names() -> set[str]:
    """Every name the reference must document: the exports and their public
    members, of the package and of its public modules."""
    names = set()
    for module in (anygate, anygate.asgi, anygate.hypercorn, anygate.uvicorn):
        names |= module_names(module)
    return names


def module_names(module: Any) -> set[str]:
    names = set()
    for name in module.__all__:
        if name.startswith("__"):
            continue  # __version__
        names.add(f"{module.__name__}.{name}")
        obj = getattr(module, name)
        if isinstance(obj, type):
            members = [member for member in vars(obj) if not member.startswith("_")]
            if dataclasses.is_dataclass(obj):
                members += [field.name for field in dataclasses.fields(obj)]
            names.update(f"{module.__name__}.{name}.{member}" for member in members)
    return names


def check_reference(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn of a public name that the reference leaves out.

    The reference names each member in its topic's section, so a member added
    to the code is not documented by itself; a member listed twice is already
    a warning of Sphinx's (a duplicate object description).
    """
    documented = {name for name, *_ in env.get_domain("py").get_objects()}
    for name in sorted(public_names() - documented):
        logger.warning("%s is public but not in docs/reference.rst", name)


def setup(app: Sphinx) -> None:
    app.connect("missing-reference", resolve_annotation, priority=400)
    app.connect("env-check-consistency", check_reference)
