"""Packaging beyond pyproject.toml: ``conf/`` (the Hydra configs, at the top of the checkout)
ships inside the wheel as ``lfbm_lightning/conf``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["lfbm_lightning*"]) + ["lfbm_lightning.conf"],
    package_dir={"lfbm_lightning.conf": "conf"},
)
