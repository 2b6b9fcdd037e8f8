"""DVC stage `ingest`: real + synthetic folders -> data/prepared/{images.npy, manifest.csv}.

Reads params section `ingest`. Writes (atomically):
  data/prepared/images.npy       (N, S, S, 3) uint8, row i = manifest id i
  data/prepared/manifest.csv     one row per image (see entromix.ingest.MANIFEST_COLUMNS)
  data/prepared/duplicates.csv   dropped exact duplicates and why
  data/prepared/synthetic_tiers.csv  id,filename,tier,detail from ingest.tiers_csv (measurement only)
  data/prepared/ingest_config.json  the settings this run used
  metrics/ingest.json            counts per split and class, duplicates, found vs expected
"""

from pathlib import Path

from entromix.atomic import write_csv, write_json
from entromix.ingest import IngestConfig, decode_images, ingest_metrics, plan_ingest
from entromix.params import load_params, section, to_dict
from entromix.stage import run_stage, stage_args

OUT = Path("data/prepared")
METRICS = Path("metrics/ingest.json")


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "ingest", IngestConfig, args.params)
    print(f"entromix ingest: real images from {config.path('real_dir')}, synthetic from "
          f"{config.path('synthetic_dir')}; storing {config.image_size}x{config.image_size} RGB")
    plan = plan_ingest(config)
    metrics = ingest_metrics(plan)
    m = metrics["ingest"]
    real_line = ", ".join(f"{s} {m['real'][s]['total']}" for s in ("train", "val", "test"))
    print(f"entromix ingest: {plan.discoveries['real'].layout} layout; real {real_line}; "
          f"synthetic {m['synthetic']['total']}; duplicates dropped {len(plan.duplicates)}"
          + (f"; bad images skipped {len(plan.skipped)} (data/prepared/skipped.csv)" if len(plan.skipped) else ""))
    manifest = decode_images(plan, OUT / "images.npy")
    write_csv(OUT / "manifest.csv", manifest)
    write_csv(OUT / "duplicates.csv", plan.duplicates)
    write_csv(OUT / "skipped.csv", plan.skipped)
    write_csv(OUT / "synthetic_tiers.csv", plan.tiers)
    write_json(OUT / "ingest_config.json", to_dict(config))
    write_json(METRICS, metrics)


if __name__ == "__main__":
    run_stage("ingest", main)
