"""Packaging hook (the metadata is in pyproject.toml): a built wheel carries the repository's ``migrations/``
and ``koans/`` as package data (``service/db/_data/migrations``, ``agent/_data/koans``), so ``dreamfix db
upgrade`` and the koan commands work from a plain install. Editable installs read the repository folders."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {
    "migrations": Path("service", "db", "_data", "migrations"),
    "koans": Path("agent", "_data", "koans"),
}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source, target in BUNDLED.items():
            shutil.copytree(
                ROOT / source,
                Path(self.build_lib) / target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )


setup(cmdclass={"build_py": BuildPyWithData})
