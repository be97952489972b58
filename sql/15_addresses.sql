-- E-mail addresses: the one rule ingest, settings, suppressions and unsubscribe links store them by.

-- An address as runhub stores it, or null when the sender could not deliver to it: trimmed of white
-- space, lower-cased and checked by plpython/addresses.py's rule (lowered(), then the grammar). Text
-- of over 1,000 characters, or over 254 once trimmed, is no address and is refused before any work:
-- no valid address is longer, and the grammar in PL/Python ignores statement_timeout. lower() under
-- the "C" collation lowers A-Z alone, in every database locale (a locale's lower() reads İ as i and
-- the Kelvin sign as k, which the grammar refuses); the grammar lowers the rest of a domain. The
-- common addresses pass the pattern here (ASCII_FAST_PATTERN there, with its lengths; proved equal
-- by tests/db/test_mailbox.py), sparing a PL/Python call; the grammar takes the others.
CREATE OR REPLACE FUNCTION runhub._address(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.length(t.address) > 254 THEN NULL
                WHEN t.address ~ '^[a-z0-9!#$%&\x27*+/=^_`{|}~-]+(\.[a-z0-9!#$%&\x27*+/=^_`{|}~-]+)*@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$'
                 AND pg_catalog.length(pg_catalog.split_part(t.address, '@', 2)) <= 63
                 AND pg_catalog.strpos(t.address, 'xn--') = 0  -- A-labels are stored in Unicode
                THEN t.address
                ELSE runhub._mailbox(t.address) END
      FROM (SELECT pg_catalog.lower(runhub._trim(p_text) COLLATE "C") AS address
             WHERE pg_catalog.length(p_text) <= 1000) t
$$;
