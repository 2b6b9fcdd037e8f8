"""Static checks of the source: how files are unpickled and how subprocesses start.

These complement the behaviour tests (tests/test_models_augment.py loads a file that only plain
unpickling could read and expects a clear error): a new ``torch.load`` without
``weights_only=True`` or a shell built from strings would fail here before review.
"""

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("src", "pipeline", "scripts", "benchmarks") for p in (PROJECT / d).rglob("*.py"))


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_there_is_source_to_check():
    assert len(SOURCES) > 20 and any(p.name == "checkpoints.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_every_torch_load_uses_weights_only(path):
    for node, name in calls(path):
        if name.endswith("torch.load"):
            kw = {k.arg: k.value for k in node.keywords}
            assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, (
                f"{path}:{node.lineno}: torch.load without weights_only=True"
            )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_no_shell_commands(path):
    for node, name in calls(path):
        assert name not in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"), (
            f"{path}:{node.lineno}: {name} runs a shell"
        )
        for kw in node.keywords:
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, (
                    f"{path}:{node.lineno}: shell=True"
                )
        if name.startswith("subprocess.") and node.args:  # an argument list, never one command string
            assert not isinstance(node.args[0], (ast.Constant, ast.JoinedStr)), (
                f"{path}:{node.lineno}: command as a string"
            )
