"""runhub's lists are said once (sql/00_constants.sql, read by runhub_loader.constants): every locale
has its catalog and every template its files, and the renderer uses those lists. (That they are what
the deployed database returns: tests/db/test_constants.py.)"""
from __future__ import annotations

from runhub_loader import constants
from runhub_loader.mail import locales, render
from runhub_loader.mail.locales import catalog


def test_every_locale_has_a_catalog_and_every_template_its_files():
    assert locales.LOCALES is constants.LOCALES and locales.DEFAULT_LOCALE in constants.LOCALES
    for locale in constants.LOCALES:
        assert catalog(locale)
    names = {"promo" if t == "update" else t for t in constants.TEMPLATES}  # update: the promo layout
    for name in names:
        render._env.get_template(f"{name}.html")
        render._env.get_template(f"{name}.txt")
    assert render.WORKFLOW_TEMPLATES == frozenset(constants.TEMPLATES) - {"digest"}
