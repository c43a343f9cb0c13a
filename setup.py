"""Package discovery only (metadata lives in pyproject.toml).

The top-level ``resources/`` folder is installed as ``invsr_desktop.resources`` so that a wheel carries the bundled
models without claiming a generic top-level name in site-packages; pyproject's ``packages.find`` cannot express a
found tree plus one remapped folder, hence these few lines.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["invsr_desktop*", "plugins*", "model_export*"]) + ["invsr_desktop.resources"],
    package_dir={"invsr_desktop.resources": "resources"},
)
