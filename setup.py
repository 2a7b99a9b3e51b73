"""Packaging: the repository root is the package `vidlat`, and each folder holding an __init__.py
is one of its subpackages (cli, pipeline, stages, store, benchmarks and theirs), found here rather
than listed by hand. Everything else lives in pyproject.toml."""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

SUBPACKAGES = find_packages(".", exclude=["tests", "tests.*", "build", "build.*", "docs*"])


class BuildPy(build_py):
    """Leaves this file out of the wheel: with the root as the package it would be vidlat.setup."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) != ("vidlat", "setup")]


setup(
    package_dir={"vidlat": "."},
    packages=["vidlat", *(f"vidlat.{name}" for name in SUBPACKAGES)],
    cmdclass={"build_py": BuildPy},
)
