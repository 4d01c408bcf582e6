"""What users download: the wheel and the sdist, built from this tree."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import anygate

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(path.name for path in (ROOT / "src" / "anygate").glob("*.py"))
STUBS = sorted(path.name for path in (ROOT / "stubs" / "anygate").glob("*.pyi"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # The wheel is built from the sdist, which proves the sdist is complete too.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return out


def only(directory: Path, pattern: str) -> Path:
    [path] = directory.glob(pattern)
    return path


class TestWheel:
    def test_holds_the_modules_stubs_and_marker(self, dist: Path) -> None:
        names = set(zipfile.ZipFile(only(dist, "*.whl")).namelist())
        for name in [*MODULES, *STUBS, "py.typed"]:
            assert f"anygate/{name}" in names
        assert "anygate/__init__.pyi" in names

    def test_holds_no_tests_or_tools(self, dist: Path) -> None:
        names = zipfile.ZipFile(only(dist, "*.whl")).namelist()
        top = {name.split("/")[0] for name in names}
        assert top == {"anygate", f"anygate-{anygate.__version__}.dist-info"}

    def test_version_is_the_package_version(self, dist: Path) -> None:
        wheel = zipfile.ZipFile(only(dist, "*.whl"))
        metadata = wheel.read(f"anygate-{anygate.__version__}.dist-info/METADATA").decode()
        assert f"\nVersion: {anygate.__version__}\n" in metadata


class TestSdist:
    def test_holds_sources_stubs_tests_and_readme(self, dist: Path) -> None:
        sdist = only(dist, "*.tar.gz")
        prefix = f"anygate-{anygate.__version__}"
        with tarfile.open(sdist) as archive:
            names = set(archive.getnames())
        expected = [
            "README.md",
            "CHANGELOG.md",
            "pyproject.toml",
            *(f"src/anygate/{name}" for name in [*MODULES, "py.typed"]),
            *(f"stubs/anygate/{name}" for name in STUBS),
            "tests/conftest.py",
            "tests/test_enter.py",
        ]
        missing = [name for name in expected if f"{prefix}/{name}" not in names]
        assert missing == []
