"""runhub's lists and bounds are said once (sql/00_constants.sql): what Python reads from the file
is what the deployed database's runhub._constants() returns, and the renderer uses those lists."""
from __future__ import annotations

from runhub_loader import constants
from runhub_loader.mail import locales, render
from runhub_loader.mail.locales import catalog


def test_python_reads_what_the_database_enforces(conn):
    assert constants.CONSTANTS == conn.execute("SELECT runhub._constants()").fetchone()[0]


def test_every_locale_has_a_catalog_and_every_template_its_files():
    assert locales.LOCALES is constants.LOCALES and locales.DEFAULT_LOCALE in constants.LOCALES
    for locale in constants.LOCALES:
        assert catalog(locale)
    names = {"promo" if t == "update" else t for t in constants.TEMPLATES}  # update: the promo layout
    for name in names:
        render._env.get_template(f"{name}.html")
        render._env.get_template(f"{name}.txt")
    assert render.WORKFLOW_TEMPLATES == frozenset(constants.TEMPLATES) - {"digest"}
