"""Sweep files (``sweeps/*.yaml``) and the DVC experiments that run them.

A sweep (:func:`load_sweep`) is a set of named variants, each a handful of ``-S`` overrides on a
common ``base`` (it pins what the sweep holds fixed, so the sweep means the same thing when
params.yaml's defaults change). ``entromix sweep`` queues one ordinary DVC experiment per
(setting, variant, seed), named ``<sweep>-<variant>-<full|nN>-s<seed>`` (:func:`experiment_name`,
read back by :func:`parse_name`), with the commands :func:`queue_commands` builds.

Sweep file keys: ``name`` (experiment name prefix), ``title`` and ``about`` (for RESULTS.md),
``report`` (``score``: out-of-fold and tier AUROCs; ``scores``: those of every quality score;
``val``: validation metrics, for choosing a recipe; ``test``: the test metrics of a comparison;
``gate``: the scorer's tier AUROCs beside what the gate did downstream; see
:mod:`entromix.comparison.sweep_metrics`), ``target`` (optional stage: ``score`` runs the score
stage and what it needs, nothing downstream), ``seed_keys`` (default ``train.seed``),
``settings`` (``full`` and/or ``N``: ``ingest.scarce_train_images=N``), ``base``, ``variants``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from entromix.common.errors import DataError

Report = Literal["score", "scores", "val", "test", "gate"]
REPORTS = ("score", "scores", "val", "test", "gate")
NAME_RE = re.compile(r"^(?P<sweep>[a-z0-9]+)-(?P<variant>[a-z0-9][a-z0-9.-]*?)-(?P<setting>full|n\d+)-s(?P<seed>\d+)$")
VARIANT_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@dataclass(frozen=True)
class Sweep:
    """A sweep file (``sweeps/*.yaml``): named variants of ``-S`` overrides on a common base."""

    name: str
    title: str
    about: str
    report: Report
    target: str | None
    seed_keys: tuple[str, ...]
    settings: tuple[str, ...]
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such sweep file (see sweeps/ for examples).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict) or not data["variants"]:
        raise DataError(f"{path}: expected a mapping with a non-empty 'variants' mapping (name -> overrides).")
    name = str(data.get("name", ""))
    if not re.fullmatch(r"[a-z0-9]+", name):
        raise DataError(
            f"{path}: 'name' must be lower-case letters and digits (it prefixes experiment names), got {name!r}."
        )
    report = data.get("report", "test")
    if report not in REPORTS:
        raise DataError(f"{path}: 'report' is {report!r}; use score, scores, val, test or gate.")
    variants = {}
    for variant, changes in data["variants"].items():
        if not VARIANT_RE.fullmatch(str(variant)):
            raise DataError(f"{path}: variant name {variant!r} must be lower-case letters, digits, '.' and '-'.")
        if not isinstance(changes or {}, dict):
            raise DataError(f"{path}: variants.{variant} must be a mapping of dotted params keys to values.")
        variants[str(variant)] = dict(changes or {})
    return Sweep(
        name=name,
        title=str(data.get("title", name)),
        about=str(data.get("about", "")).strip(),
        report=report,
        target=data.get("target"),
        seed_keys=tuple(data.get("seed_keys", ["train.seed"])),
        settings=tuple(str(s) for s in data.get("settings", ["full"])),
        base=dict(data.get("base") or {}),
        variants=variants,
    )


def experiment_name(sweep: str, variant: str, setting: str, seed: int) -> str:
    """``<sweep>-<variant>-<full|nN>-s<seed>``, the DVC experiment name (parsed by :func:`parse_name`)."""
    return f"{sweep}-{variant}-{'full' if setting == 'full' else 'n' + str(setting)}-s{seed}"


def parse_name(name: str) -> dict[str, Any] | None:
    """The sweep, variant, setting and seed of an experiment name, or None for another name."""
    match = NAME_RE.match(name or "")
    if not match:
        return None
    setting = match["setting"]
    return {
        "sweep": match["sweep"],
        "variant": match["variant"],
        "setting": "full" if setting == "full" else setting[1:],
        "seed": int(match["seed"]),
    }


def overrides(sweep: Sweep, variant: str, setting: str, seed: int) -> dict[str, object]:
    """The ``-S`` values of one experiment: the base, the variant's changes, the seed in every
    ``seed_keys`` key and, in a scarce setting, in ``ingest.scarce_seed`` too (each seed draws its
    own N images)."""
    values = dict(sweep.base) | dict(sweep.variants[variant]) | {key: seed for key in sweep.seed_keys}
    if setting == "full":
        values["ingest.scarce_train_images"] = "null"
    else:
        values["ingest.scarce_train_images"] = int(setting)
        values["ingest.scarce_seed"] = seed
    return values


def format_value(value: object) -> str:
    """A ``-S key=value`` value in the override grammar DVC reads (Hydra's): ``null``, ``true``,
    ``[a,b]`` for a list, ``{k:v}`` for a mapping (``ingest.labels``, ``ingest.class_map``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def select(sweep: Sweep, source: str | Path, settings: str | None, variants: str | None) -> tuple[list, list]:
    """The settings and variants to run (comma-separated; None: all of the sweep file's), checked."""
    chosen_settings = settings.split(",") if settings else list(sweep.settings)
    chosen_variants = variants.split(",") if variants else list(sweep.variants)
    unknown = [v for v in chosen_variants if v not in sweep.variants]
    bad_settings = [s for s in chosen_settings if s != "full" and not s.isdigit()]
    if unknown or bad_settings:
        raise DataError(
            f"unknown variant(s) {unknown} or setting(s) {bad_settings}; {source} has "
            f"{', '.join(sweep.variants)}, and settings are 'full' or a number."
        )
    return chosen_settings, chosen_variants


def queue_commands(
    sweep: Sweep, settings: list[str], variants: list[str], seeds: list[int]
) -> tuple[set[str], list[list[str]]]:
    """The experiment names and the ``dvc exp run --queue`` arguments, one per (setting, variant,
    seed). No ``--force``: in ``dvc exp run`` it also means "rerun every stage"."""
    names: set[str] = set()
    queue: list[list[str]] = []
    for setting in settings:
        for variant in variants:
            for seed in seeds:
                name = experiment_name(sweep.name, variant, setting, seed)
                names.add(name)
                sets = [
                    arg
                    for k, v in overrides(sweep, variant, setting, seed).items()
                    for arg in ("-S", f"{k}={format_value(v)}")
                ]
                queue.append(["exp", "run", "--queue", "-n", name, *sets, *([sweep.target] if sweep.target else [])])
    return names, queue
