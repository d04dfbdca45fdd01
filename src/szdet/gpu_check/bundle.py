"""What ``make device-bundle`` carries to a bare CUDA machine, put on this process's path.

::

    device-bundle/py3.12/*.whl       manylinux wheels of pydantic and its dependencies, for the
                                     bare machine's Python (scripts/device_bundle.sh)
    device-bundle/kernels/           mamba_ssm's and causal_conv1d's Python sources at the pinned
                                     version (their Triton SSD kernels need no build)

A wheel is a zip of the files it installs, so the wheels are unpacked into a temporary folder
(no pip, no network). Both folders go at the end of ``sys.path``: whatever the machine has
installed wins, so in the image (which has all of it) the bundle changes nothing. Standard
library only: this runs before anything the bundle provides can be imported.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def python_tag() -> str:
    return f"py{sys.version_info.major}.{sys.version_info.minor}"


def use_bundle(bundle: Path) -> dict[str, Any]:
    """Put ``bundle``'s wheels (for this Python) and kernel sources on the path; what was used."""
    wheels = sorted((bundle / python_tag()).glob("*.whl"))
    kernels = bundle / "kernels"
    if not wheels and not kernels.is_dir():
        raise SystemExit(
            f"{bundle}: no wheels for {python_tag()} and no kernel sources: run make device-bundle "
            f"DEVICE_PYTHON={python_tag()[2:]}"
        )
    site = Path(tempfile.mkdtemp(prefix="szdet-bundle-"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    sys.path.extend([str(site), str(kernels)])
    return {
        "path": str(bundle),
        "wheels": [w.name for w in wheels],
        "kernel_sources": sorted(p.name for p in kernels.iterdir()) if kernels.is_dir() else [],
    }
