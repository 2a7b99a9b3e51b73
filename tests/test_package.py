"""The wheel installs one package, `vidlat`, holding every module of the source folders."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = {"setup.py"}  # the root is the package `vidlat`; its packaging script is not a module


def source_modules() -> set[str]:
    """Every module the source tree holds, by its installed name: the root's own modules and
    every module of a folder that is a package (has an __init__.py) below it, tests excepted."""
    names = {f"vidlat.{p.stem}" for p in ROOT.glob("*.py") if p.name not in PACKAGING}
    names = {n.removesuffix(".__init__") for n in names}
    for path in ROOT.rglob("__init__.py"):
        folder = path.parent
        rel = folder.relative_to(ROOT)
        if folder == ROOT or rel.parts[0] in ("tests", "build", ".venv", "docs"):
            continue
        package = ".".join(["vidlat", *rel.parts])
        names |= {f"{package}.{p.stem}".removesuffix(".__init__") for p in folder.glob("*.py")}
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(ROOT),
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out)
    (path,) = out.glob("vidlat-*.whl")
    return path


def test_wheel_holds_only_vidlat(wheel: Path):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"vidlat"}
    entry = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "vidlat = vidlat.cli.app:main" in text


def test_wheel_has_every_module_and_imports_them(wheel: Path, tmp_path: Path):
    in_wheel = {
        n[:-3].replace("/", ".").removesuffix(".__init__")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.endswith(".py")
    }
    missing = source_modules() - in_wheel
    assert not missing, f"modules left out of the wheel (see setup.py): {sorted(missing)}"
    assert "vidlat.setup" not in in_wheel and "vidlat.stages.stage1.hierarchical.model" in in_wheel
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        f"names = {sorted(in_wheel)!r}\n"
        "for n in names: importlib.import_module(n)\n"
        "import vidlat\n"
        f"assert vidlat.__file__.startswith({str(target)!r}), vidlat.__file__\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(in_wheel)


def test_python_dash_m_vidlat_runs():
    result = subprocess.run(
        [sys.executable, "-m", "vidlat", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vidlat ")
