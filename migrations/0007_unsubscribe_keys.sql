-- Unsubscribe signing keys with ids, so the key can rotate (and a leaked one be revoked) while links
-- already sent keep working: a v2 token names the key that signed it. The secret of migration 0004
-- moves here as key 1, the key v1 tokens (which name none) are verified with.
-- depends: 0006_trust_boundary

-- Nobody but the owner reads it (no grants): the signing functions run with definer rights.
CREATE TABLE runhub.unsubscribe_keys (
    kid         int         PRIMARY KEY CHECK (kid > 0),
    secret      bytea       NOT NULL CHECK (octet_length(secret) >= 16),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz  -- set: tokens naming this key are refused
);

INSERT INTO runhub.unsubscribe_keys (kid, secret, created_at)
SELECT 1, value, created_at FROM runhub.secrets WHERE name = 'unsubscribe';

-- Moved, not copied: one place holds the key, so revoking key 1 leaves no usable copy behind.
DELETE FROM runhub.secrets WHERE name = 'unsubscribe';
