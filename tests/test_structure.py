"""The shape of the Python package, checked from its source (no imports, no Spark).

* no import cycle among fruitlens modules, counting function-local imports too (a cycle
  hidden behind a lazy import is still a cycle);
* no module over ~400 lines and no function over ~60 lines, except the few listed
  below with the reason they are allowed to be longer;
* function-local imports only for optional or heavy dependencies (pyspark, onnx, ...),
  never for a fruitlens or standard-library module that could be imported at the top;
* every public module declares ``__all__``;
* the executor-side task code imports only the standard library, pyarrow and the core.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "fruitlens"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Modules allowed over MAX_MODULE_LINES, with the reason.
LONG_MODULES: dict[str, str] = {}

#: Functions allowed over MAX_FUNCTION_LINES ("module:qualified.name"), with the reason.
LONG_FUNCTIONS: dict[str, str] = {}

#: Third-party modules a function may import lazily: optional extras, or heavy
#: imports that must not be paid at ``import fruitlens`` / in every Spark worker.
LAZY_OK = (
    "pyspark",
    "py4j",
    "onnx",
    "onnxruntime",
    "h5py",
    "tensorflow",
    "keras",
    "boto3",
    "botocore",
    "moto",
    "matplotlib",
    "PIL",
    "sklearn",
    "pandas",
    # fruitlens serve (the optional extra `serve`)
    "starlette",
    "uvicorn",
    "python_multipart",
    "prometheus_client",
)

#: What the code that runs in every Spark Python worker may import (top-level names).
TASK_MODULE = "fruitlens.spark._tasks"
TASK_ALLOWED_FRUITLENS = {
    "fruitlens._core",
    "fruitlens._pca",
    "fruitlens._native",
    "fruitlens._files",
    "fruitlens._uri",
    "fruitlens._common",
    "fruitlens._errors",
    "fruitlens._k",
    "fruitlens._runtime",
    "fruitlens._reading",
    "fruitlens._fs",
}

#: Function-local imports of fruitlens modules that are allowed, with the reason.
LAZY_FRUITLENS = {
    ("fruitlens.spark", "fruitlens.spark.ml"): "imports pyspark.ml (heavy, optional); "
    "Python workers import fruitlens.spark and never need it",
    **{
        ("fruitlens.cli", f"fruitlens.{m}"): "the CLI imports a command's module only for "
        "that command: `fruitlens run` does not wait for them (~0.1 s of its start-up)"
        for m in ("predict", "serve", "train_pipeline")
    },
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


#: Native extension modules (no Python source; they import nothing of fruitlens).
NATIVE = {"fruitlens._native"}


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module, path).split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    skip.add(id(sub))
    return skip


def _imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, is function-local, line) for each runtime import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    local: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                local.add(id(sub))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in local, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                name = sub if sub in MODULES or sub in NATIVE else target
                out.append((name, id(node) in local, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _local, _line in _imports(name, path):
            if target in NATIVE:
                continue
            while target and target not in MODULES:  # `import fruitlens.x.y` -> known prefix
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 10
    # the checker sees real edges (a sanity check of the parsing itself)
    assert "fruitlens._errors" in graph["fruitlens"]
    assert _cycles(graph) == []


#: The layers of the README's architecture section, first to last: a module may import
#: from its own layer and the ones before it, never from a later one.
LAYERS = {
    "base": "_errors _common _uri _faults",
    "core": "_core _pca _k _files _runtime _manifest classify _evaluate",
    "storage": "_fs _listing _reading output io",
    "models": "_onnx_graph _keras_weights _convert _model_info _fetch models quantize _export",
    "api": "fruitlens",
    "spark": "spark ml",
    "app": "pipeline _report _session _preflight _args _logs _progress cli job serve _model_dir "
    "train_pipeline predict _native_run _native_embed _lineage _incremental _incremental_spark "
    "_stream_run",
}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "fruitlens"
    for i, names in enumerate(LAYERS.values()):
        if top in names.split():
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS (add it, and to the README)")


def test_modules_import_only_from_their_layer_or_earlier() -> None:
    upward = [
        f"{src} ({list(LAYERS)[_layer(src)]}) imports {dst} ({list(LAYERS)[_layer(dst)]})"
        for src, targets in _graph().items()
        for dst in targets
        if _layer(dst) > _layer(src)
    ]
    assert upward == []


def test_the_cycle_checker_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    if name in LONG_MODULES:
        return
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines"


def _functions(tree: ast.AST, prefix: str = ""):
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")


def test_function_size() -> None:
    long = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for qual, node in _functions(tree):
            size = node.end_lineno - node.lineno + 1
            key = f"{name}:{qual}"
            if size > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                long.append(f"{key} ({size} lines)")
    assert long == []


def test_local_imports_are_only_for_optional_or_heavy_dependencies() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for name, path in MODULES.items():
        for target, local, line in _imports(name, path):
            if not local:
                continue
            top = target.split(".")[0]
            if top in LAZY_OK or (name, target) in LAZY_FRUITLENS:
                continue
            if top == "fruitlens" or top in stdlib or top in ("pyarrow", "numpy"):
                bad.append(f"{name}:{line} imports {target} inside a function")
    assert bad == []


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if not n.rsplit(".", 1)[-1].startswith("_"))
)
def test_public_modules_declare_all(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    names = {
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    assert "__all__" in names, f"{name} has no __all__"


def test_task_code_imports_only_pyarrow_and_the_core() -> None:
    if TASK_MODULE not in MODULES:
        pytest.skip("no executor-side task module")
    stdlib = set(sys.stdlib_module_names)
    for target, _local, line in _imports(TASK_MODULE, MODULES[TASK_MODULE]):
        top = target.split(".")[0]
        if top in stdlib or top in ("pyarrow", "__future__"):
            continue
        if target.startswith(("pyspark.taskcontext", "pyspark.files")):
            continue
        assert target in TASK_ALLOWED_FRUITLENS, f"{TASK_MODULE}:{line} imports {target}"
