"""Regenerate docs/_inventories/*.inv, the intersphinx inventories of the docs.

The docs link to Python's, anyio's and trio's documentation. Sphinx finds the
targets of those links in each project's ``objects.inv``, which it normally
downloads from the project's site at build time. The build must work offline
and from a fresh clone, so the inventories are committed, and this tool
rebuilds them from sources that the package registries serve:

- Python's, from Debian's ``python3.X-doc`` package (``apt-get download``: a
  download, not an install), which ships the HTML docs with their inventory.
- anyio's and trio's, by building each project's own docs sources, which
  their sdists on PyPI include, with Sphinx in a throwaway virtual
  environment. The page names and anchors are the ones their sites use,
  since the sites are built from the same sources.

Run it after upgrading anyio or trio, or to move to a newer Python's docs::

    python tools/inventories.py [--python 3.11] [--anyio 4.16.0] [--trio 0.35.0]

The versions default to the ones installed in the running environment.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
from importlib.metadata import version
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "_inventories"


def run(*command: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(part) for part in command], check=True, cwd=cwd)


def python_inventory(python: str, work: Path) -> None:
    run("apt-get", "download", f"python{python}-doc", cwd=work)
    [deb] = work.glob(f"python{python}-doc_*.deb")
    run("dpkg-deb", "-x", deb, work / "deb")
    shutil.copy(work / "deb" / f"usr/share/doc/python{python}/html/objects.inv", OUT / "python.inv")


def sphinx_env(work: Path, anyio: str, trio: str) -> Path:
    """A virtual environment with Sphinx, and the extension trio's docs need."""
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    packages = ["sphinx", "sphinxcontrib-trio", f"anyio=={anyio}", f"trio=={trio}"]
    run(python, "-m", "pip", "install", "--quiet", *packages)
    return python


def sdist_docs(project: str, release: str, work: Path, python: Path) -> Path:
    run(python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        "--dest", work, f"{project}=={release}")  # fmt: skip
    with tarfile.open(work / f"{project}-{release}.tar.gz") as archive:
        archive.extractall(work, filter="data")
    return work / f"{project}-{release}" / "docs"


def build_inventory(python: Path, source: Path, extensions: list[str], name: str) -> None:
    """Build the HTML docs with only the extensions that declare objects; keep objects.inv.

    The other extensions (themes, tabs, link checkers) only change how pages
    look, not which objects they document or where. Warnings are expected.
    """
    out = source.parent / "_html"
    run(python, "-m", "sphinx", "-b", "html", "-E", "-q", "-D", "html_theme=basic",
        "-D", f"extensions={','.join(extensions)}", source, out)  # fmt: skip
    shutil.copy(out / "objects.inv", OUT / f"{name}.inv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    parser.add_argument("--anyio", default=version("anyio"))
    parser.add_argument("--trio", default=version("trio"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        python_inventory(args.python, work)
        python = sphinx_env(work, args.anyio, args.trio)
        anyio_docs = sdist_docs("anyio", args.anyio, work, python)
        build_inventory(python, anyio_docs, ["sphinx.ext.autodoc"], "anyio")
        trio_docs = sdist_docs("trio", args.trio, work, python) / "source"
        # trio's conf.py hooks into intersphinx, which is not used here.
        with (trio_docs / "conf.py").open("a") as conf:
            conf.write("\n\ndef setup(app):\n    pass\n")
        extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinxcontrib_trio"]
        build_inventory(python, trio_docs, extensions, "trio")
    for inventory in sorted(OUT.glob("*.inv")):
        print(f"{inventory.relative_to(OUT.parent.parent)}: {inventory.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
