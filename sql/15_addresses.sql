-- E-mail addresses: the one rule ingest, settings, suppressions and unsubscribe links store them by.

-- Whether lower-cased text is an address of the common shape, which the grammar would take as it
-- is: plpython/addresses.py's ASCII_FAST_PATTERN with its lengths (proved equal by
-- tests/db/test_mailbox.py). _address and ingest's check of the common shape both read it.
-- No SET clause: inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._is_plain_address(p_address text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.length(p_address) <= 254
       AND p_address ~ '^[a-z0-9!#$%&\x27*+/=^_`{|}~-]+(\.[a-z0-9!#$%&\x27*+/=^_`{|}~-]+)*@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$'
       AND pg_catalog.length(pg_catalog.split_part(p_address, '@', 2)) <= 63
       AND pg_catalog.strpos(p_address, 'xn--') = 0  -- A-labels are stored in Unicode
$$;

-- An address as runhub stores it, or null when the sender could not deliver to it: trimmed of white
-- space, lower-cased and checked by plpython/addresses.py's rule (lowered(), then the grammar). Text
-- of over 1,000 characters, or over 254 once trimmed, is no address and is refused before any work:
-- no valid address is longer, and the grammar in PL/Python ignores statement_timeout. lower() under
-- the "C" collation lowers A-Z alone, in every database locale (a locale's lower() reads İ as i and
-- the Kelvin sign as k, which the grammar refuses); the grammar lowers the rest of a domain. The
-- common addresses pass _is_plain_address, sparing a PL/Python call; the grammar takes the others.
CREATE OR REPLACE FUNCTION runhub._address(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.length(t.address) > 254 THEN NULL
                WHEN runhub._is_plain_address(t.address) THEN t.address
                ELSE runhub._mailbox(t.address) END
      FROM (SELECT pg_catalog.lower(runhub._trim(p_text) COLLATE "C") AS address
             WHERE pg_catalog.length(p_text) <= runhub._constant('maxAddressInputLength')) t
$$;
