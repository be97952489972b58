"""runhub's loader: deploys the SQL and PL/Python into PostgreSQL and runs the sender daemon."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("runhub")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0.0.0+checkout"
