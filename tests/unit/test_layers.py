"""The house's rules, checked on every ``make lint`` and ``make test``: no import cycle between
the bridge's modules, and dependencies that point one way, from the entry points down to the
domain (docs/architecture.md). Imports inside functions count; imports only for type checking
(``if TYPE_CHECKING:``) do not."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bridge"

#: Each layer may import from its own and the layers below it, never above.
LAYERS: list[tuple[str, ...]] = [
    # the command line
    ("bridge.cli",),
    # the runtime: threads, processes, and the wiring that builds everything (the web app too)
    ("bridge.runtime",),
    # the HTTP API and the console
    ("bridge.web",),
    # the pipeline's stages
    ("bridge.pipeline", "bridge.ingest", "bridge.findings"),
    # what the stages use: the state store, the de-identification engine, the remote systems
    ("bridge.store", "bridge.deid", "bridge.peers"),
    # shared utilities
    (
        "bridge.config",
        "bridge.logging",
        "bridge.metrics",
        "bridge.clock",
        "bridge.dicom",
        "bridge.tls",
        "bridge.sample",
    ),
    # the domain: vocabulary, states, errors
    ("bridge.domain", "bridge"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The bridge modules ``name`` imports (a name imported from a package counts as its
    submodule when it is one)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> str:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(resolve(a.name) for a in node.names if a.name.startswith("bridge"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package
                for _ in range(node.level - 1):
                    up = up.rpartition(".")[0]
                base = f"{up}.{base}" if base else up
            if base.startswith("bridge"):
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    found.add(sub if sub in modules else resolve(base))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard("")
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    best, rank = -1, len(LAYERS)
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_every_module_has_a_layer() -> None:
    assert [m for m in _graph() if _layer(m) == len(LAYERS)] == []


def test_dependencies_point_down() -> None:
    upward = sorted(
        f"{m} -> {d}"
        for m, deps in _graph().items()
        for d in deps
        if _layer(d) < _layer(m)  # a lower index is a higher layer
    )
    assert upward == []


def test_the_domain_imports_nothing_of_the_bridge() -> None:
    graph = _graph()
    outside = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("bridge.domain")
        for d in deps
        if not d.startswith("bridge.domain")
    )
    assert outside == []


def test_the_package_does_not_import_the_tests() -> None:
    hits = [
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*.py")
        if any(
            isinstance(n, ast.ImportFrom | ast.Import)
            and any(
                (getattr(n, "module", None) or a.name).split(".")[0] == "tests" for a in n.names
            )
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert hits == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The rules above are only worth what the checker finds: a planted cycle and a planted
    upward import are reported."""
    graph = {"bridge.a": {"bridge.b"}, "bridge.b": {"bridge.a"}, "bridge.c": set()}
    assert _cycles(graph) == [["bridge.a", "bridge.b"]]
    assert _layer("bridge.store.repo") > _layer("bridge.web.app")
    assert _layer("bridge.domain.errors") > _layer("bridge.store.repo")


#: The factories that build a peer from the settings: only the runtime (the wiring) and the
#: command line (which is its own wiring for one command) call them; every other module is
#: given the client, or a function that opens one.
FACTORIES = {"bridge.peers.connect", "bridge.deid.build"}


def test_only_the_wiring_builds_peers_and_the_engine() -> None:
    builders = sorted(
        f"{m} -> {d}"
        for m, deps in _graph().items()
        for d in deps
        if d in FACTORIES and not m.startswith(("bridge.runtime", "bridge.cli"))
    )
    assert builders == []


def test_worker_and_listener_processes_leave_the_web_application_out(tmp_path: Path) -> None:
    """`bridge worker` and `bridge listen` import what they run, not the HTTP server and the
    console (fastapi, starlette, uvicorn, Jinja2: about 10 MiB of each process's memory)."""
    import subprocess
    import sys

    code = """
import argparse, sys
from bridge.cli import runtime
from bridge.config import Settings
settings = Settings(data_dir=sys.argv[1])
for command, args in (
    (runtime.worker, argparse.Namespace(index=0)),  # stops at the missing secret
    (runtime.listen, argparse.Namespace(index=1, socket_fd=-1)),  # at the store's schema
):
    try:
        command(args, settings)
    except Exception:
        pass
    else:
        raise SystemExit("the command was meant to stop early")
web = ("fastapi", "starlette", "uvicorn", "jinja2")
print(sorted({m for m in sys.modules if m.split(".")[0] in web or m.startswith("bridge.web")}))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout
