"""Packaging: everything else is in setup.cfg. The top-level configs/ folder ships inside the
package as ``domadapt/configs`` (package_dir mapping), so an installed wheel finds its presets."""

from pathlib import Path

from setuptools import find_packages, setup

PRESETS = ["domadapt.configs"] + [f"domadapt.configs.{p.name}" for p in sorted(Path("configs").iterdir())
                                  if p.is_dir()]

setup(
    packages=find_packages(include=["domadapt*"]) + PRESETS,
    package_dir={"domadapt.configs": "configs"},
    package_data={name: ["*.yaml"] for name in PRESETS},
)
