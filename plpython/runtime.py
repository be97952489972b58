"""What the server's PL/Python runs on, for `runhub status` and deploy checks."""
import platform
import sys

from ._export import sql_function


def describe(package_name: str, module_names: list[str]) -> dict:
    """The interpreter and the modules loaded, as plain data."""
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "bundle": package_name,
        "modules": sorted(module_names),
    }


@sql_function("runhub._plpython_runtime() RETURNS jsonb", volatility="volatile")
def plpython_runtime() -> dict:
    package = __name__.rpartition(".")[0]
    loaded = [name.rpartition(".")[2] for name in sys.modules if name.startswith(package + ".")]
    return describe(package, loaded)
