-- Owner-facing texts in the project's language: a key and its params, rendered from runhub.texts
-- (the mail's catalogs, which every deploy copies in) as runhub_loader/mail/locales.py renders mail:
-- {name} placeholders, numbers written as Babel writes them, plural forms by CLDR's rules.
-- tests/db/test_texts.py holds the two renderings to each other for every key in every locale.

-- The CLDR plural category of a whole number n in a locale (the rules of runhub's five languages).
-- No SET clause: inlined where it is used (a SQL function with one is planned on every call).
CREATE OR REPLACE FUNCTION runhub._plural_category(p_locale text, p_n numeric)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE p_locale
        WHEN 'ar' THEN CASE WHEN p_n = 0 THEN 'zero' WHEN p_n = 1 THEN 'one' WHEN p_n = 2 THEN 'two'
                            WHEN p_n % 100 BETWEEN 3 AND 10 THEN 'few' WHEN p_n % 100 BETWEEN 11 AND 99 THEN 'many'
                            ELSE 'other' END
        WHEN 'fr' THEN CASE WHEN p_n IN (0, 1) THEN 'one'
                            WHEN p_n <> 0 AND p_n % 1000000 = 0 THEN 'many' ELSE 'other' END
        WHEN 'es' THEN CASE WHEN p_n = 1 THEN 'one'
                            WHEN p_n <> 0 AND p_n % 1000000 = 0 THEN 'many' ELSE 'other' END
        ELSE CASE WHEN p_n = 1 THEN 'one' ELSE 'other' END
    END
$$;

-- A number as Babel's format_decimal writes it in the locale: groups of three digits and the
-- decimal mark of the language (1,612.5 in en and ar; 1.612,5 in de and es; 1 612,5 in fr with a
-- narrow no-break space). No SET clause: inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._format_number(p_locale text, p_n numeric)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_n < 0 THEN '-' ELSE '' END
           || pg_catalog.regexp_replace(pg_catalog.trunc(pg_catalog.abs(p_n))::text, '(\d)(?=(\d{3})+$)',
                  '\1' || CASE p_locale WHEN 'de' THEN '.' WHEN 'es' THEN '.' WHEN 'fr' THEN E'\u202f' ELSE ',' END, 'g')
           || CASE WHEN pg_catalog.abs(p_n) <> pg_catalog.trunc(pg_catalog.abs(p_n))
                   THEN CASE WHEN p_locale IN ('de', 'es', 'fr') THEN ',' ELSE '.' END
                        || pg_catalog.rtrim(pg_catalog.split_part(pg_catalog.abs(p_n)::text, '.', 2), '0')
                   ELSE '' END
$$;

-- The text of key in locale (else English, else the key itself) with params filled in: a number as
-- the locale writes it, anything else as it is. p_plural names the param whose number picks the
-- plural form (<key>.<category>).
CREATE OR REPLACE FUNCTION runhub._text(p_locale text, p_key text, p_params jsonb DEFAULT '{}', p_plural text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_locale text := CASE WHEN p_locale = ANY (runhub._locales()) THEN p_locale ELSE 'en' END;
    v_key    text := p_key;
    v_text   text;
    v_param  record;
BEGIN
    IF p_plural IS NOT NULL AND jsonb_typeof(p_params -> p_plural) = 'number' THEN
        v_key := p_key || '.' || runhub._plural_category(v_locale, (p_params ->> p_plural)::numeric);
    END IF;
    SELECT t.text INTO v_text FROM runhub.texts t
     WHERE t.key = v_key AND t.locale IN (v_locale, 'en')
     ORDER BY t.locale = v_locale DESC LIMIT 1;
    v_text := coalesce(v_text, p_key);
    FOR v_param IN SELECT * FROM jsonb_each(coalesce(p_params, '{}')) LOOP
        v_text := replace(v_text, '{' || v_param.key || '}',
                          CASE jsonb_typeof(v_param.value)
                              WHEN 'number' THEN runhub._format_number(v_locale, (v_param.value #>> '{}')::numeric)
                              ELSE coalesce(v_param.value #>> '{}', '') END);
    END LOOP;
    RETURN v_text;
END
$$;

-- An owner-facing text as the API returns it: {key, params, text}, the text in locale. No SET
-- clause: inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._owner_text(p_locale text, p_key text, p_params jsonb DEFAULT '{}', p_plural text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.jsonb_build_object('key', p_key, 'params', coalesce(p_params, '{}'),
                                         'text', runhub._text(p_locale, p_key, p_params, p_plural))
$$;
