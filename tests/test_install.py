"""The install's declared bounds match what requirements.lock actually installs."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_requires_python_is_the_lowest_version_every_locked_package_supports():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = Version(re.search(r">=\s*([0-9.]+)", declared).group(1))
    assert Version(".".join(map(str, sys.version_info[:3]))) >= lowest
    pins, refused = locked(), []
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        needs = dist.metadata.get("Requires-Python")
        if name in pins and dist.version == pins[name] and needs:
            if not any(Version(f"{lowest.major}.{lowest.minor}.{micro}") in SpecifierSet(needs) for micro in (0, 99)):
                refused.append(f"{name}=={dist.version} needs Python {needs}")
    assert not refused, f"pyproject.toml declares requires-python {declared}, but the lock holds: {refused}"
