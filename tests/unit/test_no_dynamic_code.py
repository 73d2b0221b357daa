"""Static scan (RELIABILITY R24): nothing in the package turns payload data into code.

Over every ``.py`` file under ``src/spoolhouse`` it asserts:

* no ``eval``, ``exec`` or ``compile`` builtins, no ``marshal`` (nor ``shelve``,
  ``dill``, ``cloudpickle``, ``jsonpickle``, which unpickle);
* ``pickle.loads``/``load``/``Unpickler`` only inside ``PickleSerializer`` in
  ``serializer.py``, the explicit opt-in;
* ``importlib.import_module``, ``__import__``, ``pkgutil.resolve_name`` and
  ``runpy`` only with a literal string argument, except in the modules that
  load the *app* named on the command line (``cli/*.py``, ``loader.py``).

Aliases (``import pickle as p``, ``from importlib import import_module``) are
resolved, bare references (``f = pickle.loads``) count like calls, and
``getattr(pickle, ...)`` on a watched module is refused. The scanner is tested
on small snippets below so a pass means something.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "spoolhouse"

#: Files (relative to the package, glob) that may import a module named at run time:
#: the CLI and the app loader take an app path from the command line, never from a payload.
DYNAMIC_IMPORT_ALLOWED = ("cli/*.py", "cli/**/*.py", "loader.py")

#: Where unpickling is allowed: (file, enclosing class).
UNPICKLE_ALLOWED = ("serializer.py", "PickleSerializer")

NEVER = {
    "eval": "eval() runs code",
    "exec": "exec() runs code",
    "compile": "compile() builds code objects",
    "builtins.eval": "eval() runs code",
    "builtins.exec": "exec() runs code",
    "builtins.compile": "compile() builds code objects",
}
UNPICKLE = {"pickle.loads", "pickle.load", "pickle.Unpickler", "_pickle.loads", "_pickle.load"}
UNPICKLE |= {"_pickle.Unpickler"}
DYNAMIC_IMPORT = {
    "importlib.import_module",
    "importlib.__import__",
    "__import__",
    "builtins.__import__",
    "pkgutil.resolve_name",
    "runpy.run_module",
    "runpy.run_path",
    "importlib.util.spec_from_file_location",
}
FORBIDDEN_MODULES = {"marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
WATCHED_MODULES = {"pickle", "_pickle", "marshal", "builtins", "importlib", "pkgutil", "runpy"}


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the package
    line: int
    message: str

    def __str__(self) -> str:
        return f"spoolhouse/{self.path}:{self.line}: {self.message}"


class _Scanner(ast.NodeVisitor):
    def __init__(self, relpath: str) -> None:
        self.relpath = relpath
        self.aliases: dict[str, str] = {}  # local name -> dotted origin
        self.classes: list[str] = []
        self.findings: list[Finding] = []
        self.allowed_unpickle_uses = 0
        self._handled: set[int] = set()  # ids of nodes already judged as a call's callee

    # -- helpers

    def _report(self, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(self.relpath, getattr(node, "lineno", 0), message))

    def _dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def _dynamic_import_allowed(self) -> bool:
        return any(fnmatch(self.relpath, pattern) for pattern in DYNAMIC_IMPORT_ALLOWED)

    def _unpickle_allowed(self) -> bool:
        file, cls = UNPICKLE_ALLOWED
        return self.relpath == file and cls in self.classes

    def _judge(self, node: ast.AST, name: str, call: ast.Call | None) -> None:
        if name in NEVER:
            self._report(node, NEVER[name])
        elif name in UNPICKLE:
            if self._unpickle_allowed():
                self.allowed_unpickle_uses += 1
            else:
                self._report(node, f"{name} outside PickleSerializer executes code from the store")
        elif name in DYNAMIC_IMPORT:
            literal = (
                call is not None
                and bool(call.args)
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
                and not call.keywords
            )
            if not literal and not self._dynamic_import_allowed():
                self._report(
                    node,
                    f"{name} with a computed argument; only the CLI/app loader may import a "
                    "module named at run time",
                )
        elif name.split(".", 1)[0] in FORBIDDEN_MODULES:
            self._report(node, f"{name}: module {name.split('.', 1)[0]} deserializes code")

    # -- visitors

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".", 1)[0] in FORBIDDEN_MODULES:
                self._report(node, f"import of {alias.name}, which deserializes code")
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".", 1)[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0 and module.split(".", 1)[0] in FORBIDDEN_MODULES:
            self._report(node, f"import from {module}, which deserializes code")
        for alias in node.names:
            origin = f"{module}.{alias.name}" if node.level == 0 else f".{alias.name}"
            self.aliases[alias.asname or alias.name] = origin

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_Call(self, node: ast.Call) -> None:
        name = self._dotted(node.func)
        if name is not None:
            self._handled.add(id(node.func))
            self._judge(node, name, node)
            if name in ("getattr", "builtins.getattr") and node.args:
                target = self._dotted(node.args[0])
                if target is not None and target in WATCHED_MODULES:
                    self._report(node, f"getattr() on module {target} hides what is called")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if id(node) not in self._handled and isinstance(node.ctx, ast.Load):
            name = self.aliases.get(node.id, node.id)
            if name in NEVER or name in UNPICKLE or name in DYNAMIC_IMPORT:
                self._judge(node, name, None)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self._handled:
            name = self._dotted(node)
            if name is not None and (name in NEVER or name in UNPICKLE or name in DYNAMIC_IMPORT):
                self._judge(node, name, None)
                return  # the base name is part of this reference
        self._handled.add(id(node.value))  # `pickle` in `pickle.dumps` is not a reference
        self.generic_visit(node)


def scan_source(source: str, relpath: str) -> tuple[list[Finding], int]:
    """Return the violations in ``source`` and how many allowed unpickle uses it has."""
    scanner = _Scanner(relpath)
    scanner.visit(ast.parse(source, filename=relpath))
    return scanner.findings, scanner.allowed_unpickle_uses


def package_files() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).as_posix()


def test_package_has_no_dynamic_code() -> None:
    files = list(package_files())
    assert any(rel == "serializer.py" for _, rel in files), f"nothing to scan under {PACKAGE}"
    findings: list[Finding] = []
    allowed_unpickles = 0
    for path, rel in files:
        found, allowed = scan_source(path.read_text(encoding="utf-8"), rel)
        findings += found
        allowed_unpickles += allowed
    assert not findings, "dynamic code in the package:\n" + "\n".join(map(str, findings))
    # PickleSerializer is the one opt-in; if it disappears, update UNPICKLE_ALLOWED.
    assert allowed_unpickles == 1


# --------------------------------------------------------------------------- scanner self-test

BAD = [
    ("eval(x)", "mod.py"),
    ("exec(code)", "mod.py"),
    ("import builtins\nbuiltins.eval(x)", "mod.py"),
    ("f = eval", "mod.py"),
    ("compile(src, 'f', 'exec')", "mod.py"),
    ("import marshal", "mod.py"),
    ("from marshal import loads", "mod.py"),
    ("import shelve", "mod.py"),
    ("import pickle\npickle.loads(data)", "mod.py"),
    ("import pickle as p\np.loads(data)", "mod.py"),
    ("from pickle import loads\nloads(data)", "mod.py"),
    ("from pickle import loads as l\nl(data)", "mod.py"),
    ("import pickle\nf = pickle.loads", "mod.py"),
    ("import pickle\npickle.Unpickler(f).load()", "mod.py"),
    ("import pickle\npickle.load(f)", "mod.py"),
    ("import pickle\ngetattr(pickle, 'lo' + 'ads')(data)", "mod.py"),
    (
        "import pickle\nclass Other:\n    def f(self, d):\n        return pickle.loads(d)",
        "serializer.py",
    ),
    ("import pickle\npickle.loads(d)", "serializer.py"),
    ("import importlib\nimportlib.import_module(row.task)", "worker/executor.py"),
    ("from importlib import import_module\nimport_module(name)", "registry.py"),
    ("__import__(name)", "registry.py"),
    ("import importlib\nimportlib.import_module(f'x.{name}')", "registry.py"),
    ("import importlib\nload = importlib.import_module", "registry.py"),
    ("import pkgutil\npkgutil.resolve_name(path)", "registry.py"),
    ("import runpy\nrunpy.run_path(path)", "registry.py"),
]

GOOD = [
    (
        "import pickle\nclass PickleSerializer:\n    def f(self, d):\n        return pickle.loads(d)",
        "serializer.py",
    ),
    ("import pickle\npickle.dumps(x)", "mod.py"),
    ("import re\nre.compile('x')", "mod.py"),
    ("import json\njson.loads(data)", "mod.py"),
    ("x.eval()", "mod.py"),
    (
        "import importlib\nimportlib.import_module('spoolhouse.backends.redis')",
        "backends/__init__.py",
    ),
    ("import importlib\nimportlib.import_module(app_path)", "cli/__init__.py"),
    ("import importlib\nimportlib.import_module(app_path)", "cli/run.py"),
    ("import importlib\nimportlib.import_module(app_path)", "loader.py"),
    ("from . import loader\nloader.load(x)", "mod.py"),
]


@pytest.mark.parametrize(("source", "relpath"), BAD)
def test_scanner_flags(source: str, relpath: str) -> None:
    findings, _ = scan_source(source, relpath)
    assert findings, f"scanner missed: {source!r} in {relpath}"


@pytest.mark.parametrize(("source", "relpath"), GOOD)
def test_scanner_allows(source: str, relpath: str) -> None:
    findings, _ = scan_source(source, relpath)
    assert not findings, "\n".join(map(str, findings))
