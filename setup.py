"""Package discovery for setuptools (all other metadata is in pyproject.toml).

The repository keeps ``models/``, ``pipelines/`` and ``configs/`` at the top level; they are installed
inside the ``streamparse`` package (``streamparse.models``, ``streamparse.pipelines`` and the presets
as ``streamparse/configs/*.yaml``), so an installed streamparse never shadows, or is shadowed by,
another project's top-level ``models``. Every package is found by ``setuptools.find_packages``, so a
new subpackage can never be left out of the wheel (``tests/test_wheel.py`` checks it).
"""

from setuptools import find_namespace_packages, find_packages, setup

# top-level folder -> the package it is installed as
MAPPED = {"models": "streamparse.models", "pipelines": "streamparse.pipelines"}
DATA = {"configs": "streamparse.configs"}  # folders of data files only (YAML presets)


def _under(folder: str, package: str, finder) -> dict[str, str]:
    found = [package] + [f"{package}.{p}" for p in finder(folder, exclude=["*__pycache__*"])]
    return {p: folder + p[len(package):].replace(".", "/") for p in found}


package_dir = {"streamparse": "streamparse"}
for folder, package in MAPPED.items():
    package_dir.update(_under(folder, package, find_packages))
for folder, package in DATA.items():
    package_dir.update(_under(folder, package, find_namespace_packages))

setup(
    packages=find_namespace_packages(include=["streamparse", "streamparse.*"], exclude=["*__pycache__*"])
    + sorted(set(package_dir) - {"streamparse"}),
    package_dir=package_dir,
    package_data={"streamparse.weights": ["*.pt"], **{p: ["*.yaml"] for p in package_dir if p.startswith("streamparse.configs")}},
)
