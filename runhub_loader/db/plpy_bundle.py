"""Ships `plpython/*.py` into the server without touching its file system.

The modules' sources go into `runhub.plpython_modules`; each function a module marks with
`@sql_function` becomes a thin plpython3u wrapper. On its first call in a session the wrapper loads
the whole bundle from that table into a private package named after the bundle's checksum (an
import hook serves `from . import x` between modules) and caches it in GD. A redeploy changes the
checksum baked into the wrappers, so every session picks up the new code on its next call.
"""
from __future__ import annotations

import hashlib
import importlib
import re
import types
from dataclasses import dataclass
from pathlib import Path

from ..assets import import_plpython

SIGNATURE = re.compile(r"^\s*(?P<name>[\w.]+)\s*\((?P<args>[^)]*)\)\s+RETURNS\s+(?P<returns>.+?)\s*$", re.I | re.S)


@dataclass(frozen=True)
class Module:
    name: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


@dataclass(frozen=True)
class Export:
    module: str
    function: str
    name: str  # schema-qualified SQL name
    args: list[tuple[str, str]]  # (name, type)
    returns: str
    volatility: str


def read_modules(source_dir: Path) -> list[Module]:
    folder = source_dir / "plpython"
    return [Module(p.stem, p.read_text()) for p in sorted(folder.glob("*.py"))] if folder.is_dir() else []


def bundle_sha(modules: list[Module]) -> str:
    """The checksum the wrappers carry; computed the same way inside the server."""
    listing = "".join(f"{m.name}:{m.sha256}\n" for m in sorted(modules, key=lambda m: m.name))
    return hashlib.sha256(listing.encode()).hexdigest()


def _import_locally(source_dir: Path, modules: list[Module]) -> dict[str, types.ModuleType]:
    """Import the bundle in this process under a private name, to read its exports."""
    package = f"_runhub_scan_{bundle_sha(modules)[:16]}"
    import_plpython(source_dir, package)
    return {m.name: importlib.import_module(f"{package}.{m.name}") for m in modules if m.name != "__init__"}


def parse_signature(signature: str) -> tuple[str, list[tuple[str, str]], str]:
    match = SIGNATURE.match(signature)
    if not match:
        raise ValueError(f"cannot read SQL signature {signature!r}")
    args = []
    for part in filter(None, (a.strip() for a in match["args"].split(","))):
        arg_name, _, arg_type = part.partition(" ")
        if not arg_type:
            raise ValueError(f"argument {part!r} of {signature!r} needs a name and a type")
        args.append((arg_name, arg_type.strip()))
    return match["name"], args, match["returns"]


def find_exports(source_dir: Path, modules: list[Module]) -> list[Export]:
    exports = []
    for module_name, module in sorted(_import_locally(source_dir, modules).items()):
        for attr, fn in sorted(vars(module).items()):
            meta = getattr(fn, "__runhub_sql__", None)
            if meta is None or getattr(fn, "__module__", None) != module.__name__:
                continue
            name, args, returns = parse_signature(meta["signature"])
            exports.append(Export(module_name, attr, name, args, returns, meta["volatility"]))
    return exports


# The first call in a session loads every module of the bundle from the table.
_PRELUDE = '''\
_pkg = GD.get("runhub.plpython:{sha}")
if _pkg is None:
    import hashlib, importlib.util, sys, types
    _rows = plpy.execute("SELECT name, source, sha256 FROM runhub.plpython_modules ORDER BY name")
    _have = hashlib.sha256("".join(r["name"] + ":" + r["sha256"] + "\\n" for r in _rows).encode()).hexdigest()
    if _have != "{sha}":
        plpy.error("runhub: PL/Python modules do not match this function's bundle",
                   hint="a deploy is in progress or failed half-way; retry, or run runhub deploy",
                   sqlstate="55000")
    _sources = {{r["name"]: r["source"] for r in _rows}}
    _pkg = types.ModuleType("_runhub_plpython_{short}")
    _pkg.__path__ = []
    sys.modules[_pkg.__name__] = _pkg

    class _BundleLoader:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            head, _, leaf = fullname.rpartition(".")
            if head == _pkg.__name__ and leaf in _sources:
                return importlib.util.spec_from_loader(fullname, _BundleLoader)
            return None

        @staticmethod
        def create_module(spec):
            return None

        @staticmethod
        def exec_module(module):
            leaf = module.__name__.rpartition(".")[2]
            exec(compile(_sources[leaf], "plpython/" + leaf + ".py", "exec"), module.__dict__)

    sys.meta_path.append(_BundleLoader)
    GD["runhub.plpython:{sha}"] = _pkg
import importlib
_module = importlib.import_module("_runhub_plpython_{short}.{module}")
return _module.{function}({call_args})
'''


def wrapper_sql(export: Export, sha: str) -> str:
    arglist = ", ".join(f"{n} {t}" for n, t in export.args)
    uses_jsonb = any(t.lower() == "jsonb" for _, t in export.args) or export.returns.lower() == "jsonb"
    transform = " TRANSFORM FOR TYPE jsonb" if uses_jsonb else ""
    body = _PRELUDE.format(sha=sha, short=sha[:16], module=export.module, function=export.function,
                           call_args=", ".join(n for n, _ in export.args))
    return (
        f"CREATE OR REPLACE FUNCTION {export.name}({arglist}) RETURNS {export.returns}\n"
        f"LANGUAGE plpython3u{transform} {export.volatility.upper()}\n"
        f"SET search_path = pg_catalog, pg_temp\n"
        f"AS $plpython$\n{body}$plpython$;\n"
    )


def bundle_statements(source_dir: Path) -> list[tuple[str, tuple | None]]:
    """(sql, params) pairs that install the modules and their wrappers."""
    modules = read_modules(source_dir)
    sha = bundle_sha(modules)
    statements: list[tuple[str, tuple | None]] = [(
        "DELETE FROM runhub.plpython_modules WHERE NOT (name = ANY (%s))", ([m.name for m in modules],))]
    for m in modules:
        statements.append((
            "INSERT INTO runhub.plpython_modules (name, source, sha256) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET source = excluded.source, sha256 = excluded.sha256, "
            "deployed_at = now() WHERE runhub.plpython_modules.sha256 <> excluded.sha256",
            (m.name, m.source, m.sha256)))
    for export in find_exports(source_dir, modules):
        statements.append((wrapper_sql(export, sha), None))
    return statements
