"""Package list for setuptools (metadata, dependencies and scripts are in pyproject.toml).

Only `infonoise_jax*` is installed. The repository's `configs/` directory is shipped inside
it as `infonoise_jax.configs`, so an installed copy finds `default.py` (whose keys every
config is checked against) and the example configs without a source tree.
"""

from setuptools import find_packages, setup

setup(
  packages=[*find_packages(include=["infonoise_jax", "infonoise_jax.*"]), "infonoise_jax.configs"],
  package_dir={"infonoise_jax.configs": "configs"},
)
