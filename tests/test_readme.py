"""Every command the README (and the docs/ pages it links) tells a user to type is run by a test or by CI.

Each shell command in the ```bash blocks of README.md and docs/*.md must match a rule in ``COVERAGE``; a rule names
the test file that runs the command (or its ``make -n`` / ``--dry-run`` form for the long ones)
and a piece of that file's source that shows it does. A new README command with no rule fails
here, with the command named, until a test runs it. Commands that are the user's own git
housekeeping or shell set-up (``git add``, ``source .venv/bin/activate``) are listed as such.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (pattern matched at the start of the command, file that runs it, evidence in that file's source)
COVERAGE: list[tuple[str, str, str]] = [
    # make: CI runs lint and test; the others are checked as `make -n` (they call dvc from .venv)
    # and the dvc command they wrap is run by the end-to-end test
    (r"make test$", ".ci/run", "make test"),
    (r"make lint$", ".ci/run", "make lint"),
    (r"scripts/check_python_versions\.sh$", ".ci/run", 'scripts/check_python_versions.sh --fast "${others[@]}"'),
    (r"make test-fast$", "tests/test_readme.py", '"test-fast": \'-m "not slow"\''),
    (r"make test TEST_WORKERS=0 ", "tests/test_readme.py", "def test_make_test_runs_a_worker_per_core_or_in_process"),
    (r"make format$", "tests/test_readme.py", '"format": ".venv/bin/ruff format"'),
    (r"make run$", "tests/test_readme.py", '{"run": ".venv/bin/dvc repro"'),
    (r"make repro$", "tests/test_install.py", '(["repro"], ".venv/bin/dvc repro")'),
    (r"make exp ", "tests/test_install.py", '"ARGS=-S curriculum.jsd_start=0.05"'),
    (r"make metrics-diff$", "tests/test_install.py", '(["metrics-diff"], ".venv/bin/dvc metrics diff")'),
    (r"make plots$", "tests/test_install.py", '(["plots"], ".venv/bin/dvc plots show")'),
    (r"make results$", "tests/test_experiments.py", '"\\t$(BIN)/entromix results\\n" in (PROJECT / "Makefile")'),
    (r"make bench$", "tests/test_benchmarks.py", '"bench_train.py"'),
    # the DVC commands, run on a tiny project in a temporary git repo
    (r"dvc repro$", "tests/test_pipeline_e2e.py", '["dvc", "repro"]'),
    (r"dvc metrics show$", "tests/test_pipeline_e2e.py", '["dvc", "metrics", "show"'),
    (r"dvc plots show$", "tests/test_pipeline_e2e.py", '["dvc", "plots", "show"'),
    (r"dvc plots diff$", "tests/test_pipeline_e2e.py", '["dvc", "plots", "diff"'),
    (r"dvc plots diff live-demo --targets ", "tests/test_pipeline_e2e.py", '"dvclive/train/plots/metrics/val_auc.tsv"'),
    (r"dvc metrics diff$", "tests/test_pipeline_e2e.py", '["dvc", "metrics", "diff"'),
    (r"dvc exp run -S curriculum\.jsd_start=0\.05$", "tests/test_pipeline_e2e.py", '"curriculum.jsd_start=0.05"'),
    (r"dvc exp show", "tests/test_pipeline_e2e.py", '["dvc", "exp", "show"'),
    (r"dvc exp run -S score\.synthetic_score=", "tests/test_pipeline_e2e.py", '"score.synthetic_score=mahalanobis"'),
    (r"dvc exp run --queue ", "tests/test_experiments.py", '"dvc exp run --queue -n'),
    # docs/params.md: what -S writes into params.yaml, on a one-stage project
    (
        r"dvc exp run -S curriculum\.jsd_start=0\.05 demo$",
        "tests/test_params_file.py",
        '"curriculum.jsd_start=0.05", "demo"',
    ),
    (r"git diff --stat$", "tests/test_params_file.py", 'sh("git", "diff", "--stat")'),
    (r"dvc queue start ", "tests/test_experiments.py", "def test_sweep_counts_active_queue_workers"),
    (r"dvc add data/mydata$", "tests/test_readme.py", "        dvc add data/mydata\n"),
    (r"dvc remote add -d shared ", "tests/test_pipeline_e2e.py", '["dvc", "remote", "add", "-d", "shared"'),
    (r"dvc push$", "tests/test_pipeline_e2e.py", '["dvc", "push"]'),
    (r"gto register blood-smear-classifier ", "tests/test_pipeline_e2e.py", '["gto", "register"'),
    (r"dvc artifacts get ", "tests/test_pipeline_e2e.py", '["dvc", "artifacts", "get"'),
    # the model's command line, on a project that ran every stage
    (r"entromix predict ", "tests/test_predict.py", 'cli(project, "predict"'),
    (r"entromix export ", "tests/test_predict.py", 'cli(project, "export"'),
    # the review: paired tests of two revisions / experiments / seed pairs, on a DVC project with commits and
    # experiments, and on the real pipeline's output
    (r"entromix compare$", "tests/test_compare_cli.py", 'compare(repo, "HEAD", "workspace", "--json")'),
    (r"entromix compare \S+ \S+", "tests/test_compare_cli.py", 'compare_process(repo, "weak", "strong")'),
    (
        r"make compare ",
        "tests/test_install.py",
        '(["compare", "ARGS=main HEAD"], ".venv/bin/entromix compare main HEAD")',
    ),
    (r"dvc exp branch ", "tests/test_compare_cli.py", '["dvc", "exp", "branch"'),
    (r"make review ", "tests/test_install.py", '".venv/bin/entromix review -S curriculum.jsd_start=0.05 --seeds 3'),
    (r"make exp-show$", "tests/test_install.py", '(["exp-show"], ".venv/bin/entromix exp-show")'),
    (r"entromix review ", "tests/test_review.py", 'review(repo, "-S", "curriculum.strategy=strong", "--seeds", "3"'),
    (r"entromix exp-show", "tests/test_review.py", 'cli_in_process(repo, "exp-show"'),
    (r"make install$", ".ci/run", "make test"),  # make test installs .venv first (its prerequisite)
    # the GPU check: its dry run on the CPU; the real run needs a CUDA machine (BENCHMARKS.md, "GPU")
    (r"\.venv/bin/python benchmarks/gpu_check\.py ", "tests/test_gpu_check.py", '"gpu_check.py"), "--dry-run"'),
    (r"entromix sweep ", "tests/test_experiments.py", '"-m", "entromix.cli", "sweep", str(sweep_file)'),
    (r"python scripts/ood_report\.py ", "tests/test_ood.py", '"ood_report.py"'),
    # the user's own shell and git steps around the commands above
    (r"source \.venv/bin/activate$", "tests/test_readme.py", "source {venv_bin}/activate"),
    (r"git add ", "tests/test_readme.py", "git add data/mydata.dvc data/.gitignore && git commit"),
]


#: where the user-facing commands live: the README and the reference pages it links
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: the README stays short: what it is, the two commands, the review, your own data, links (issue 26)
README_MAX_LINES = 250


def readme_commands() -> list[str]:
    """Each command line of the ```bash blocks of README.md and docs/*.md (continuations joined,
    comments dropped)."""
    text = "\n".join(path.read_text() for path in DOCUMENTS)
    commands = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#\s", line.strip())[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_the_readme_has_commands():
    assert len(readme_commands()) > 20


def test_the_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("\n") <= README_MAX_LINES, "README.md is over 250 lines: move reference material to docs/"
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"


def test_every_readme_command_is_run_by_a_test_or_by_ci():
    uncovered = [c for c in readme_commands() if not any(re.match(p, c) for p, _, _ in COVERAGE)]
    assert not uncovered, (
        f"README commands that no test or CI step runs: {uncovered}. Run each in a test and add a rule to COVERAGE."
    )


@pytest.mark.parametrize(("pattern", "where", "evidence"), COVERAGE, ids=[p for p, _, _ in COVERAGE])
def test_each_rule_points_at_a_file_that_runs_the_command(pattern, where, evidence):
    assert evidence in (ROOT / where).read_text(), f"{where} no longer runs `{pattern}` ({evidence!r} not found)"


def test_every_rule_is_used():
    commands = readme_commands()
    unused = [p for p, _, _ in COVERAGE if not any(re.match(p, c) for c in commands)]
    assert not unused, f"COVERAGE rules for commands the README no longer has: {unused}"


@pytest.mark.parametrize("target", ["run", "test-fast", "format"])
def test_make_targets_of_the_readme_exist(target):
    """``make -n``: the target parses and names what it would run (CI runs test and lint for real)."""
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = {"run": ".venv/bin/dvc repro", "test-fast": '-m "not slow"', "format": ".venv/bin/ruff format"}
    assert expected[target] in result.stdout


def test_tracking_your_own_data_as_the_readme_says(tmp_path):
    """README "Running on your own images", step 2: activate, dvc add, git add and commit."""
    (tmp_path / "data" / "mydata" / "real" / "Benign").mkdir(parents=True)
    (tmp_path / "data" / "mydata" / "real" / "Benign" / "a.png").write_bytes(b"not really an image")
    venv_bin = Path(sys.executable).parent
    script = f"""
        set -e
        git init -q && git config user.name t && git config user.email t@t
        source {venv_bin}/activate || export PATH={venv_bin}:$PATH  # source .venv/bin/activate
        dvc init -q
        dvc add data/mydata
        git add data/mydata.dvc data/.gitignore && git commit -qm "Add raw data"
        git ls-files
    """
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "data/mydata.dvc" in result.stdout.split()
    assert "data/mydata/real/Benign/a.png" not in result.stdout  # the data is DVC's, not git's


def test_make_test_runs_a_worker_per_core_or_in_process():
    """``make test``: pytest-xdist, one worker per core, a file per worker (docs/development.md);
    TEST_WORKERS=0 runs the suite in make's own pytest process."""
    run = {
        workers: subprocess.run(
            [
                "make",
                "-n",
                "test",
                *([f"TEST_WORKERS={workers}"] if workers else []),
                "PYTEST_ARGS=tests/test_stage.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for workers in ("", "0")
    }
    assert all(r.returncode == 0 for r in run.values()), [r.stderr for r in run.values()]
    assert "-m pytest -n auto --dist loadfile tests/test_stage.py" in run[""].stdout
    assert "-m pytest -n 0 --dist loadfile tests/test_stage.py" in run["0"].stdout


def readme_results_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def results_copy(tmp_path: Path) -> Path:
    """README.md and the files its results section is generated from, copied under tmp_path."""
    for rel in (
        "README.md",
        "metrics/score.json",
        "metrics/train.json",
        "metrics/evaluate.json",
        "models/train/run.json",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    return tmp_path


def test_the_readme_results_section_matches_the_committed_metrics():
    """Every figure between the results markers is what scripts/readme_results.py writes from metrics/*.json."""
    result = readme_results_check(ROOT)
    assert result.returncode == 0, result.stderr or result.stdout


def test_the_results_check_fails_on_a_stale_figure_or_stale_metrics(tmp_path):
    root = results_copy(tmp_path)
    assert readme_results_check(root).returncode == 0
    readme = (root / "README.md").read_text()
    start, end = readme.index("<!-- results:start -->"), readme.index("<!-- results:end -->")
    figure = re.search(r"ROC-AUC (\d\.\d{3})", readme[start:end])
    assert figure, "the results section has no ROC-AUC figure"
    stale = f"ROC-AUC {float(figure.group(1)) - 0.01:.3f}"
    (root / "README.md").write_text(readme[:start] + readme[start:end].replace(figure.group(0), stale) + readme[end:])
    result = readme_results_check(root)
    assert result.returncode == 1 and "results section is out of date" in result.stderr, result.stderr
    # the README as committed, but metrics that moved since: also out of date
    (root / "README.md").write_text(readme)
    path = root / "metrics" / "evaluate.json"
    metrics = json.loads(path.read_text())
    metrics["evaluate"]["test"]["brier"] += 0.01
    path.write_text(json.dumps(metrics))
    result = readme_results_check(root)
    assert result.returncode == 1 and "results section is out of date" in result.stderr, result.stderr
