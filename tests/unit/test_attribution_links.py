"""Attribution starts in the mail: a promotion's link to the shop carries its run id (wid), in the HTML
and the text part. (Crediting payments to runs: tests/db/test_attribution.py.)"""
from __future__ import annotations


def test_promotion_mail_links_to_the_shop_with_its_run_id():
    from runhub_loader.mail.preview import SAMPLES
    from runhub_loader.mail.render import render_content

    link = "https://shop.example/?wid=8d2f0c1e-5b7a-4c3e-9f1d-2a6b3c4d5e6f"
    for template in ("promo", "update"):
        rendered = render_content(template, "en", {**SAMPLES[template], "link": link},
                                  unsubscribe_url="https://app.example/u?token=x")
        assert f'href="{link}"' in rendered.html and link in rendered.text
