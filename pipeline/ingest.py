"""DVC stage `ingest`: real + synthetic folders -> data/prepared/{images.npy, manifest.csv}.

Reads params section `ingest`. Writes, as one set (all files replaced only when all succeeded):
  data/prepared/images.npy       (N, S, S, 3) uint8, row i = manifest id i
  data/prepared/manifest.csv     one row per image (see entromix.data.prepare.MANIFEST_COLUMNS)
  data/prepared/duplicates.csv   dropped exact duplicates and why
  data/prepared/skipped.csv      bad images left out (ingest.bad_images: skip)
  data/prepared/synthetic_tiers.csv  id,filename,tier,detail from ingest.tiers_csv (measurement only)
  data/prepared/ingest_config.json  the settings this run used
  data/prepared/checksums.json   shape and sha256 of images.npy and manifest.csv (later stages check them)
  metrics/ingest.json            counts per split and class, duplicates, found vs expected
"""

from pathlib import Path

from entromix.common.atomic import atomic_paths, json_text
from entromix.common.params import load_params, section, to_dict
from entromix.common.stage import run_stage, stage_args
from entromix.common.stage_io import CHECKSUMS_NAME, prepared_checksums
from entromix.data.decode import decode_images
from entromix.data.ingest_config import IngestConfig
from entromix.data.ingest_metrics import ingest_metrics
from entromix.data.prepare import plan_ingest

OUT = Path("data/prepared")
METRICS = Path("metrics/ingest.json")


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "ingest", IngestConfig, args.params)
    print(
        f"entromix ingest: real images from {config.path('real_dir')}, synthetic from "
        f"{config.path('synthetic_dir')}; storing {config.image_size}x{config.image_size} RGB"
    )
    plan = plan_ingest(config)
    metrics = ingest_metrics(plan)
    m = metrics["ingest"]
    real_line = ", ".join(f"{s} {m['real'][s]['total']}" for s in ("train", "val", "test"))
    print(
        f"entromix ingest: {plan.discoveries['real'].layout} layout; real {real_line}; "
        f"synthetic {m['synthetic']['total']}; duplicates dropped {len(plan.duplicates)}"
        + (f"; bad images skipped {len(plan.skipped)} (data/prepared/skipped.csv)" if len(plan.skipped) else "")
    )
    names = [
        "images.npy",
        "manifest.csv",
        "duplicates.csv",
        "skipped.csv",
        "synthetic_tiers.csv",
        "ingest_config.json",
        CHECKSUMS_NAME,
    ]
    with atomic_paths(*[OUT / n for n in names], METRICS) as tmp:
        images, manifest_csv, duplicates, skipped, tiers, settings, checksums, metrics_json = tmp
        manifest = decode_images(plan, images, atomic=False)
        manifest.to_csv(manifest_csv, index=False, encoding="utf-8")
        plan.duplicates.to_csv(duplicates, index=False, encoding="utf-8")
        plan.skipped.to_csv(skipped, index=False, encoding="utf-8")
        plan.tiers.to_csv(tiers, index=False, encoding="utf-8")
        settings.write_text(json_text(to_dict(config)))
        shape = (len(manifest), config.image_size, config.image_size, 3)
        checksums.write_text(json_text(prepared_checksums(images, manifest_csv, shape, len(manifest))))
        metrics_json.write_text(json_text(metrics))


if __name__ == "__main__":
    run_stage("ingest", main)
