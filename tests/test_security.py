"""Static checks of the source: how files are unpickled and how subprocesses start.

These complement the behaviour tests (tests/test_models_augment.py loads a file that only plain
unpickling could read and expects a clear error): a new ``torch.load`` without
``weights_only=True`` or a shell built from strings would fail here before review.

Each property is one test over every source file: it collects the offending call sites and
asserts that none is left, naming them all. The scan itself is checked too (it finds the
``torch.load`` and ``subprocess`` calls the source is known to make), so a scan that reads
nothing cannot pass.
"""

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("src", "pipeline", "scripts", "benchmarks") for p in (PROJECT / d).rglob("*.py"))
SHELL_CALLS = ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput")
# files known to call torch.load; the scan must find a call in each
KNOWN_TORCH_LOADS = (
    "src/entromix/training/checkpoints.py",
    "src/entromix/common/torch_files.py",
    "src/entromix/scoring/fold_resume.py",
)


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def all_calls(suffix: str = "", prefix: str = ""):
    """(path relative to the project, call node, called name) for every matching call in SOURCES."""
    for path in SOURCES:
        for node, name in calls(path):
            if name.endswith(suffix) and name.startswith(prefix):
                yield str(path.relative_to(PROJECT)), node, name


def weights_only_true(node: ast.Call) -> bool:
    kw = {k.arg: k.value for k in node.keywords}
    if "weights_only" not in kw:
        return False
    try:
        return ast.literal_eval(kw["weights_only"]) is True
    except ValueError:  # a variable: not provably True
        return False


def shell_problems(node: ast.Call, name: str) -> list[str]:
    problems = [f"{name} runs a shell"] if name in SHELL_CALLS else []
    for kw in node.keywords:
        if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
            problems.append("shell=True")
    if name.startswith("subprocess.") and node.args:  # an argument list, never one command string
        if isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
            problems.append("command as a string")
    return problems


def test_there_is_source_to_check():
    assert len(SOURCES) > 20 and any(p.name == "checkpoints.py" for p in SOURCES)


def test_the_scan_finds_the_torch_load_and_subprocess_calls_it_should():
    loads = {rel for rel, _, _ in all_calls(suffix="torch.load")}
    missing = [rel for rel in KNOWN_TORCH_LOADS if rel not in loads]
    assert not missing, f"the scan found no torch.load in {missing}; found it in {sorted(loads)}"
    runs = {rel for rel, _, _ in all_calls(prefix="subprocess.")}
    assert len(runs) >= 3, f"the scan found subprocess calls in only {sorted(runs)}"


def test_every_torch_load_uses_weights_only():
    bad = [f"{rel}:{node.lineno}" for rel, node, _ in all_calls(suffix="torch.load") if not weights_only_true(node)]
    assert not bad, "torch.load without weights_only=True at:\n" + "\n".join(bad)


def test_no_shell_commands():
    bad = [
        f"{rel}:{node.lineno}: {problem}" for rel, node, name in all_calls() for problem in shell_problems(node, name)
    ]
    assert not bad, "calls that run a shell or pass a command as one string:\n" + "\n".join(bad)
