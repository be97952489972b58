-- The catalogs of owner-facing texts, in every locale: the same JSON the mail is rendered from
-- (runhub_loader/mail/templates/messages.<locale>.json), copied here by every deploy so that the
-- API can answer a shop owner in the project's language (runhub._text). Nobody but runhub reads it.
-- depends: 0021_outbox_cancellations

CREATE TABLE runhub.texts (
    locale text NOT NULL,
    key    text NOT NULL,
    text   text NOT NULL,
    PRIMARY KEY (locale, key)
);
