"""Where the deployable migrations/, sql/ and plpython/ are: in the wheel, or atop a checkout."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CODE_FOLDERS = ("migrations", "sql", "plpython")


def _source() -> Path:
    packaged = Path(__file__).resolve().parent / "deployable"
    if all((packaged / folder).is_dir() for folder in CODE_FOLDERS):
        return packaged
    return Path(__file__).resolve().parents[1]  # the checkout's top level


# A folder holding migrations/, sql/ and plpython/: what `runhub deploy` deploys by default.
DEFAULT_SOURCE = _source()

_PACKAGED_CATALOGS = Path(__file__).resolve().parent / "mail" / "templates"


def catalog_folder(source: Path) -> Path:
    """The mail's catalogs (messages.<locale>.json) that go with a deployable source: a checkout's
    own, else this package's (the wheel's deployable/ sits beside mail/)."""
    checkout = source / "runhub_loader" / "mail" / "templates"
    return checkout if checkout.is_dir() else _PACKAGED_CATALOGS


def import_plpython(source: Path, package: str) -> ModuleType:
    """source's plpython/ imported in this process as the package `package` (a name of the caller's
    own, never a top-level `plpython`); its modules then import as `package.module`. Its modules
    import each other relatively, so the package must be in sys.modules, under that name."""
    if package in sys.modules:
        return sys.modules[package]
    folder = source / "plpython"
    spec = importlib.util.spec_from_file_location(package, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    return module
