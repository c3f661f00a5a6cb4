"""The import graph of gateway/, read with `ast`: no import circles, and no import from a lower layer
into api/ or app.py (nor any other upward import beyond the known ones listed below)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The layers, top to bottom: a module may import its own layer and the layers below it. The first
# entry names the package's own top-level modules; the rest are packages (and cache.py). `gateway`
# is the package itself (its __init__: the version).
LAYERS = [
    ("app", "cli", "server", "probe"),
    ("api", "ui"),
    ("access", "spend", "telemetry", "cache"),
    ("routing",),
    ("providers",),
    ("wire",),
    ("storage", "config", "infra", "data", "errors", "gateway"),
]
API = 1  # LAYERS index of api/: nothing below it may import it (or anything above it)

# Upward imports that exist today, each with its reason. The list may only shrink: a new upward
# import is a design change, to be made on purpose (here) or avoided.
KNOWN_UPWARD = {
}


def modules(root):
    """{dotted module name: path} of every .py file under root/gateway (packages by their __init__)."""
    found = {}
    for path in sorted((root / "gateway").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _module_of(name, known):
    """The module an imported dotted name lives in: the longest prefix that is a module here."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(name, path, known):
    """{imported gateway module: first line} of one module: every `import` and `from ... import`,
    at any depth (inside functions too), relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            module = _module_of(target, known) if target.split(".")[0] == "gateway" else None
            if module is not None and module != name:
                found.setdefault(module, node.lineno)
    return found


def import_graph(root=ROOT):
    """{module: {imported module: line}} for every module of the gateway package under root."""
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def tangles(graph):
    """The sets of modules that import each other in a circle (strongly connected, more than one)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(start):  # Tarjan's algorithm, iterative (no recursion limit on deep graphs)
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return sorted(groups, key=min)


def cycles(graph):
    """One import circle per tangle, as a path that closes: [a, b, ..., a]."""
    return [_circle(graph, group) for group in tangles(graph)]


def _circle(graph, group):
    """One circle through the group's first module, found breadth-first (so it is a shortest one)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child == start:
                return paths[node] + [start]
            if child in group and child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    raise AssertionError(f"no circle through {start}")  # a strongly connected group always has one


def layer(name):
    """The LAYERS index of a module."""
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else parts[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return None


def upward(graph):
    """[(importer, imported, line)] where a module imports from a layer above its own."""
    return [(name, target, line) for name, targets in sorted(graph.items())
            for target, line in sorted(targets.items()) if layer(target) < layer(name)]


def _show(edges):
    return "\n".join(f"  {a} (line {line}) imports {b}" for a, b, line in edges)


# -- the gateway's graph -------------------------------------------------------------------------------

GRAPH = import_graph()


def test_the_graph_sees_every_kind_of_import():
    assert "gateway.api.chat" in GRAPH["gateway.app"]  # inside create_app
    assert "gateway.errors" in GRAPH["gateway.api.schemas"]  # from gateway.errors import ...
    assert "gateway.telemetry.events" in GRAPH["gateway.telemetry.callbacks"]
    assert "gateway" in GRAPH["gateway.api.health"]  # from gateway import __version__
    assert len(GRAPH) > 60


def test_every_module_has_a_layer():
    missing = sorted(name for name in GRAPH if layer(name) is None)
    assert not missing, f"add these to LAYERS in {Path(__file__).name}: {missing}"


def test_no_import_circles():
    lines = []
    for group in tangles(GRAPH):
        circle = _circle(GRAPH, group)
        others = sorted(group - set(circle))
        lines.append("  " + " -> ".join(circle) + (f"  (tangled with it: {', '.join(others)})" if others else ""))
    assert not lines, "import circles:\n" + "\n".join(lines)


def test_nothing_below_api_imports_api_or_app():
    wrong = [(a, b, line) for a, b, line in upward(GRAPH) if layer(b) <= API]
    assert not wrong, "imports from a lower layer into api/ or app.py:\n" + _show(wrong)


def test_upward_imports_are_only_the_known_ones():
    wrong = [(a, b, line) for a, b, line in upward(GRAPH) if (a, b) not in KNOWN_UPWARD]
    assert not wrong, (f"upward imports (see LAYERS in {Path(__file__).name}):\n" + _show(wrong))


# -- the checks themselves, on a package made here -----------------------------------------------------

def _package(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / "gateway" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(tmp_path)


def test_a_circle_through_a_function_level_and_a_relative_import_is_reported(tmp_path):
    graph = _package(tmp_path, {
        "__init__.py": "",
        "api/__init__.py": "",
        "api/views.py": "from gateway.wire import stream\n",
        "wire/__init__.py": "",
        "wire/stream.py": "def late():\n    from ..api import views\n",
        "errors.py": "import os\n",
    })
    assert graph["gateway.wire.stream"] == {"gateway.api.views": 2}
    assert cycles(graph) == [["gateway.api.views", "gateway.wire.stream", "gateway.api.views"]]
    assert upward(graph) == [("gateway.wire.stream", "gateway.api.views", 2)]


def test_a_graph_without_circles_reports_none(tmp_path):
    graph = _package(tmp_path, {
        "__init__.py": "",
        "app.py": "import gateway.api.views\nfrom gateway import errors\n",
        "api/__init__.py": "",
        "api/views.py": "from gateway.errors import Oops\n",
        "errors.py": "class Oops(Exception):\n    pass\n",
    })
    assert graph["gateway.app"] == {"gateway.api.views": 1, "gateway.errors": 2}
    assert cycles(graph) == [] and upward(graph) == []
