"""params.yaml sections are validated key by key before any work."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import ingest_config

from entromix.common.errors import ParamsError
from entromix.common.params import load_params, section
from entromix.data.ingest_config import IngestConfig, SplitFractions

GOOD = {
    "data_root": "data/demo",
    "real_dir": "real",
    "synthetic_dir": None,
    "groups_csv": None,
    "tiers_csv": None,
    "layout": "auto",
    "labels": ["benign", "malignant"],
    "positive_labels": ["malignant"],
    "unlabelled_dir": None,
    "class_map": {"a": "benign", "b": "malignant"},
    "image_size": 64,
    "resize_mode": "stretch",
    "intensity": "fixed16",
    "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    "seed": 0,
    "duplicates_across": "error",
    "workers": 0,
    "bad_images": "error",
    "max_pixels": 100_000_000,
    "min_image_size": 16,
    "scarce_label": "malignant",
    "scarce_train_images": None,
    "scarce_seed": 0,
    "scarce_unlabelled": False,
}


def build(**changes):
    return section({"ingest": {**GOOD, **changes}}, "ingest", IngestConfig)


def test_valid_section_builds_typed_config():
    config = build()
    assert isinstance(config.split, SplitFractions) and config.split.val == 0.2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"imge_size": 64}, "unknown key.*ingest.imge_size"),
        ({"image_size": "64"}, "ingest.image_size' must be an integer"),
        ({"image_size": True}, "ingest.image_size' must be an integer"),
        ({"layout": "nested"}, "ingest.layout' is 'nested'; it must be one of"),
        ({"split": {"train": 0.7, "val": 0.2, "test": 0.2}}, "sum to 1.1000"),
        ({"split": {"train": 0.8, "val": 0.2}}, "missing key.*ingest.split.test"),
        ({"class_map": {"a": "cancer"}}, "'cancer', which is not in ingest.labels"),
        ({"real_dir": "../elsewhere"}, "inside ingest.data_root"),
        ({"groups_csv": "/etc/passwd"}, "inside ingest.data_root"),
        ({"image_size": 8}, "between 16 and 1024"),
    ],
)
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ParamsError, match=message):
        build(**changes)


def test_missing_key_and_missing_section():
    data = dict(GOOD)
    del data["seed"]
    with pytest.raises(ParamsError, match="missing key.*ingest.seed"):
        section({"ingest": data}, "ingest", IngestConfig)
    with pytest.raises(ParamsError, match="section 'ingest' is missing"):
        section({}, "ingest", IngestConfig)


def test_load_params_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def as_params(config) -> dict:
    """A config dataclass as the plain mapping params.yaml would hold (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def stage_config_classes() -> dict[str, type]:
    """Each section of params.yaml and the class its stage builds it with (pipeline/*.py)."""
    import importlib.util

    from entromix.demo import DemoConfig
    from entromix.evaluation.report import EvaluateConfig
    from entromix.scoring.config import ScoreConfig
    from entromix.training.config import TrainConfig
    from entromix.training.curriculum import CurriculumConfig

    spec = importlib.util.spec_from_file_location("pipeline_predict", Path(__file__).parents[1] / "pipeline/predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    return {
        "demo": DemoConfig,
        "ingest": IngestConfig,
        "score": ScoreConfig,
        "curriculum": CurriculumConfig,
        "train": TrainConfig,
        "evaluate": EvaluateConfig,
        "predict": predict.PredictConfig,
    }


def test_project_params_yaml_is_valid():
    """The shipped params.yaml builds every section its stages read, each into its typed config
    holding exactly the values the file gives (nothing dropped, defaulted or coerced to another value)."""
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    classes = stage_config_classes()
    assert sorted(params) == sorted(classes)
    for name, cls in classes.items():
        config = section(params, name, cls)
        assert isinstance(config, cls), f"{name}: built {type(config).__name__}, not {cls.__name__}"
        assert as_params(config) == params[name], f"params.yaml's {name} section is not what {cls.__name__} holds"


def test_conftest_config_helper_is_valid():
    """conftest.ingest_config builds what the ingest section of params.yaml could hold: the same
    keys, and the params loader reads its values back unchanged; what the loader refuses, it refuses."""
    helper = ingest_config("x")
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    assert sorted(as_params(helper)) == sorted(params["ingest"])
    assert section({"ingest": as_params(helper)}, "ingest", IngestConfig) == helper
    with pytest.raises(ParamsError, match="between 16 and 1024"):
        ingest_config("x", image_size=8)
    with pytest.raises(ParamsError, match="not in ingest.labels"):
        ingest_config("x", class_map={"Benign": "benign", "Pre": "premalignant"})


def test_a_key_with_several_kinds_of_value_says_which_kinds():
    from entromix.training.config import TrainConfig

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params["train"]["class_weights"] = "balanced"
    with pytest.raises(
        ParamsError, match=r"'train.class_weights' is 'balanced'; it must be one of 'real', 'mix', 'none' or a list"
    ):
        section(params, "train", TrainConfig)


def test_class_map_null_or_empty_excludes_the_folder():
    """`Normal: null` and `Normal:` (nothing after the colon) both mean "leave the folder out"."""
    for text in ("Benign: benign\nPre: malignant\nNormal: null\n", "Benign: benign\nPre: malignant\nNormal:\n"):
        assert build(class_map=yaml.safe_load(text)).class_map["Normal"] is None
    with pytest.raises(ParamsError, match="maps no folder to a label"):
        build(class_map={"Normal": None})


def test_empty_string_key_says_it_is_empty_not_to_quote_it():
    with pytest.raises(ParamsError, match="ingest.real_dir' must be a string and is empty") as err:
        build(real_dir=None)
    assert "quote" not in str(err.value)


def test_misspelt_key_gets_a_did_you_mean():
    with pytest.raises(ParamsError, match=r"Did you mean ingest.imge_size -> ingest.image_size\?"):
        build(imge_size=64)
