"""The shape of the code: no import cycles, one way to make samples, functions a reader can hold."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "liquidgen"
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def internal_imports(name: str) -> set[str]:
    """The liquidgen modules `name` imports anywhere in its file, inside functions too: a deferred import
    hides a cycle from the interpreter, not from the reader."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import dit` imports a module, `from .x import f` a name of x
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: internal_imports(m) for m in MODULES}
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    fake = {"liquidgen.a": {"liquidgen.b"}, "liquidgen.b": {"liquidgen.a"}, "liquidgen.c": set()}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", dict.fromkeys(fake))
    monkeypatch.setattr(sys.modules[__name__], "internal_imports", fake.__getitem__)
    assert cycles() == [["liquidgen.a", "liquidgen.b"]]


def test_no_module_imports_itself_back():
    assert cycles() == []


# Modules that import Triton at the top (`kernels.fused_ops()` loads the model's only where Triton is installed).
TRITON_OPS = {f"liquidgen.kernels.{name}" for name in ("adagn", "blend", "depthwise", "glu", "group_norm", "layout")}


def test_every_module_imports():
    """In a fresh interpreter, so nothing the test session imported earlier can mask a broken import."""
    has_triton = importlib.util.find_spec("triton") is not None
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)" % sorted(
        m for m in MODULES if has_triton or m not in TRITON_OPS)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def calls_of(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text())
    imported = any(isinstance(n, ast.ImportFrom) and (n.module or "").endswith("samplers")
                   and any(a.name == name for a in n.names) for n in ast.walk(tree))
    return [n.lineno for n in ast.walk(tree) if imported and isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == name]


def test_only_the_pipeline_runs_the_samplers():
    """`generate.Pipeline` is the one place that turns a model into samples; everything else asks it."""
    files = [*SRC.rglob("*.py"), *BENCHMARKS.rglob("*.py")]
    callers = {str(p.relative_to(SRC.parents[1])) for p in files if calls_of(p, "sample")}
    assert callers == {"src/liquidgen/generate.py"}


def test_no_function_is_too_long_to_hold_in_mind():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
