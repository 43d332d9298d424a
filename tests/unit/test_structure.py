"""The package's shape, enforced: what runs inside Triton stays light, imports go one way, no circles,
every command goes through the one runner, and no code decides on a variant by matching its name."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "ner_triton"

# Layers, bottom to top: a module may import modules of its own layer or of a layer below, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "ner_triton",
            "ner_triton.schema",
            "ner_triton.errors",
            "ner_triton.labels",
            "ner_triton.alignment",
            "ner_triton.decoding",
            "ner_triton.signals",
            "ner_triton.variants",
            "ner_triton.logs",
            "ner_triton.cli",
            "ner_triton.settings",
            "ner_triton.data",
            "ner_triton.cpus",
            "ner_triton.record",
        ),
    ),
    ("runtime", ("ner_triton.runtime",)),
    ("repository", ("ner_triton.repository",)),
    ("pipeline", ("ner_triton.modeling", "ner_triton.pipeline")),
    ("gpu", ("ner_triton.gpu",)),
    ("client", ("ner_triton.client", "ner_triton.client_cli")),
    ("serving", ("ner_triton.serving",)),
    ("bench", ("ner_triton.bench",)),
    ("loadtest", ("ner_triton.loadtest",)),
    ("deploy", ("ner_triton.deploy",)),
]
# What the runtime may import from the package: the shared NER core, and itself.
RUNTIME_MAY_IMPORT = {
    "ner_triton",
    "ner_triton.schema",
    "ner_triton.errors",
    "ner_triton.labels",
    "ner_triton.alignment",
    "ner_triton.decoding",
    "ner_triton.signals",
    "ner_triton.cpus",  # stdlib only: the CPUs a stub may use (``threads_alone=auto``)
}
HEAVY = ("torch", "transformers", "tqdm", "seqeval", "ner_triton.pipeline", "ner_triton.modeling")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str) -> set[str]:
    """Every ``ner_triton`` module ``module`` imports, at any depth of its code (function-local ones too)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from ner_triton.loadtest import metrics` imports the module ner_triton.loadtest.metrics
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] == "ner_triton" and n != module}
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/unit/test_structure.py: add it to LAYERS"
    return best[0]


def test_every_module_sits_in_a_layer_and_imports_only_downwards() -> None:
    wrong = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in GRAPH.items()
        for d in deps
        if layer_of(d) > layer_of(m)
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_circles_in_src() -> None:
    """Tarjan's strongly connected components over the module graph: every component must be one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v] & GRAPH.keys():
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_runtime_imports_only_the_shared_core() -> None:
    runtime = [m for m in MODULES if m.startswith("ner_triton.runtime")]
    wrong = {m: sorted(d for d in GRAPH[m] if not d.startswith("ner_triton.runtime") and d not in RUNTIME_MAY_IMPORT)
             for m in runtime}  # fmt: skip
    assert not any(wrong.values()), wrong


def loaded_by(modules: list[str], watch: tuple[str, ...]) -> list[str]:
    """The modules among ``watch`` (and their submodules) that importing ``modules`` in a fresh interpreter
    loads, with the bundled python backend's real ``triton_python_backend_utils`` on the path (as in a stub)."""
    pytriton = pytest.importorskip("pytriton")
    backend = Path(pytriton.__file__).parent / "tritonserver" / "backends" / "python"
    code = (
        "import importlib, json, sys\n"
        f"sys.path.insert(0, {str(backend)!r})\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"watch = {watch!r}\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in watch or n.startswith(watch))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_runtime_loads_in_a_fresh_interpreter_without_heavy_modules() -> None:
    """What a python-backend stub loads: every runtime module, adapters included."""
    runtime = sorted(m for m in MODULES if m.startswith("ner_triton.runtime"))
    assert len(runtime) >= 9
    assert loaded_by(runtime, HEAVY) == []


def test_tokenizer_and_postprocess_steps_need_no_onnx() -> None:
    """The NGC server image runs the pre/post steps with numpy and tokenizers only (its BERT step is Triton's
    onnxruntime or tensorrt backend): their adapters must load without onnx or onnxruntime."""
    adapters = ["ner_triton.runtime.adapters.preprocess", "ner_triton.runtime.adapters.postprocess"]
    assert loaded_by(adapters, (*HEAVY, "onnx", "onnxruntime")) == []


def test_every_console_script_goes_through_the_runner_with_help_and_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib

    from ner_triton import __version__

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    readme_commands = set(re.findall(r"\bner-[a-z][a-z-]*[a-z]\b", (ROOT / "README.md").read_text(encoding="utf-8")))
    readme_commands -= {"ner-triton", "ner-triton-headless", "ner-admin-key"}
    assert readme_commands <= set(scripts), (
        f"README names commands that are not installed: {readme_commands - set(scripts)}"
    )
    for name, target in scripts.items():
        module, attr = target.split(":")
        main = getattr(importlib.import_module(module), attr)
        assert getattr(main, "__self__", None).__class__.__name__ == "Command", f"{name} does not use ner_triton.cli"
        assert main.__self__.prog == name
        for flag, expected in (("--help", f"usage: {name}"), ("--version", __version__)):
            with pytest.raises(SystemExit) as exit_info:
                main([flag])
            assert exit_info.value.code == 0
            assert expected in capsys.readouterr().out


def test_no_decision_on_a_variant_by_matching_its_name() -> None:
    """Variants are looked up in the registry (ner_triton.variants), never recognized by a substring."""
    pattern = re.compile(
        r"""["'](fp32|int8|trt|onnx_\w+|ner_bert_\w*|ner_fp32)["']\s+(not\s+)?in\b"""
        r"""|\.(endswith|startswith)\(\s*["'](fp32|int8|trt|onnx|ner_bert|ner_|triton|ort|hf_)"""
        r"""|\.removeprefix\("""
    )
    hits = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in MODULES.values()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "decisions by substring:\n" + "\n".join(hits)
