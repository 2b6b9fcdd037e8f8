"""DVC stage `demo`: draw the built-in blood-smear dataset into data/demo.

Reads params section `demo`. Writes data/demo/real/<split>/<class>/*.png, synthetic/<class>/*.png, groups.csv and
synthetic_quality.csv (see entromix.demo).
"""

from pathlib import Path

from entromix.common.params import load_params, section
from entromix.common.stage import run_stage, stage_args
from entromix.demo import DemoConfig, generate_demo

OUT = Path("data/demo")


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "demo", DemoConfig, args.params)
    n_syn = config.syn_good + config.syn_degraded + config.syn_hallucinated
    print(
        f"entromix demo: drawing {config.n_benign} benign + {config.n_malignant} malignant real and "
        f"{n_syn} synthetic {config.image_size}px images into {OUT} (seed {config.seed})"
    )
    summary = generate_demo(config, OUT)
    print(f"entromix demo: wrote {summary.as_dict()}")


if __name__ == "__main__":
    run_stage("demo", main)
