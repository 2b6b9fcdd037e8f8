"""Named recipes (``profiles/*.yaml``) applied as DVC experiments.

A profile is a partial params file: the sections and keys it names replace params.yaml's, the
rest stay. It is applied as ``-S section.key=value`` overrides of ``dvc exp run``, so the values
land in the experiment's params.yaml and DVC tracks them like any other change::

    dvc exp run $(python -m entromix.common.profiles profiles/reference-gpu.yaml)   # or: make exp PROFILE=reference-gpu

:func:`apply_profile` merges a profile into a params mapping; every key must already exist in
params.yaml (a typo would otherwise be silently ignored, and ``dvc exp run -S`` refuses unknown
keys anyway).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from entromix.common.errors import ParamsError
from entromix.common.params import DEFAULT_PARAMS, load_params


def load_profile(path: str | Path) -> dict[str, dict[str, Any]]:
    """The profile's sections, checked to be mappings."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such profile. The profiles are in profiles/ (e.g. profiles/reference-gpu.yaml).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ParamsError(f"{path}: a profile is a mapping of params.yaml sections to mappings of keys.")
    return data


def apply_profile(
    params: dict[str, Any], profile: dict[str, dict[str, Any]], source: str | Path = "profile"
) -> dict[str, Any]:
    """A copy of ``params`` with the profile's keys replaced; unknown sections or keys are errors."""
    merged = copy.deepcopy(params)
    for section, values in profile.items():
        if section not in merged or not isinstance(merged[section], dict):
            raise ParamsError(f"{source}: section '{section}' is not in params.yaml.")
        unknown = sorted(set(values) - set(merged[section]))
        if unknown:
            raise ParamsError(
                f"{source}: unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)} (not in params.yaml)."
            )
        merged[section].update(values)
    return merged


def set_args(profile: dict[str, dict[str, Any]]) -> list[str]:
    """``["-S", "train.lr=0.0007", ...]`` for ``dvc exp run``."""
    args = []
    for section, values in profile.items():
        for key, value in values.items():
            text = "null" if value is None else ("true" if value is True else "false" if value is False else str(value))
            args += ["-S", f"{section}.{key}={text}"]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m entromix.common.profiles profiles/NAME.yaml   (prints the -S arguments of dvc exp run)",
            file=sys.stderr,
        )
        return 2
    try:
        profile = load_profile(argv[0])
        apply_profile(load_params(DEFAULT_PARAMS), profile, argv[0])
    except ParamsError as exc:
        print(f"entromix profiles: {exc}", file=sys.stderr)
        return 2
    print(" ".join(set_args(profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
