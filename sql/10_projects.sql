-- Projects, members and the actor's role. The role is always looked up here, never taken from
-- the caller.

-- The signed-in user of this transaction: SET LOCAL runhub.user_id, else (behind PostgREST) the
-- `sub` of the verified JWT in request.jwt.claims; null when neither names a user.
CREATE OR REPLACE FUNCTION runhub.current_user_id()
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_raw text := nullif(current_setting('runhub.user_id', true), '');
BEGIN
    IF v_raw IS NULL THEN
        v_raw := nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub';
    END IF;
    RETURN v_raw::uuid;
EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
    RETURN NULL;  -- a malformed setting or claim (not a uuid, not JSON, absurdly nested) is nobody
END
$$;

-- The projects the current user is a member of (for RLS policies; definer rights avoid recursion).
CREATE OR REPLACE FUNCTION runhub._my_project_ids()
RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.project_id FROM runhub.project_members m WHERE m.user_id = runhub.current_user_id()
$$;

-- Raise PT404 unless the project exists; returns it locked for share when asked.
CREATE OR REPLACE FUNCTION runhub._require_project(p_project uuid)
RETURNS runhub.projects
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_project runhub.projects;
BEGIN
    IF p_project IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'project', 'is required');
    END IF;
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_project;
    IF NOT FOUND THEN
        PERFORM runhub._raise('projects.notFound', jsonb_build_object('projectId', p_project));
    END IF;
    RETURN v_project;
END
$$;

-- Lock a project for a row that references it, as its foreign key would (FOR KEY SHARE: a delete
-- waits for us, one committed before is seen): projects.notFound up front instead of a foreign-key
-- error in mid-insert, which only a subtransaction could turn into ours.
CREATE OR REPLACE FUNCTION runhub._lock_project(p_project uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_project IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'project', 'is required');
    END IF;
    PERFORM FROM runhub.projects WHERE id = p_project FOR KEY SHARE;
    IF NOT FOUND THEN
        PERFORM runhub._raise('projects.notFound', jsonb_build_object('projectId', p_project));
    END IF;
END
$$;

-- Rank of a role, for "at least" comparisons.
CREATE OR REPLACE FUNCTION runhub._role_rank(p_role text)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE  -- no SET clause: an expression inlined where it is used (with one, planned at every call)
AS $$ SELECT CASE p_role WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'member' THEN 1 ELSE 0 END $$;

-- The actor's role in the project. Authorization comes first: a non-member (or an unknown
-- project) gets PT404 without learning which; a member below p_min_role gets PT403.
CREATE OR REPLACE FUNCTION runhub._authorize(p_project uuid, p_actor uuid, p_min_role text DEFAULT 'member')
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role text;
BEGIN
    IF p_project IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'project', 'is required');
    END IF;
    IF p_actor IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'actor', 'is required');
    END IF;
    SELECT m.role INTO v_role FROM runhub.project_members m
     WHERE m.project_id = p_project AND m.user_id = p_actor;
    IF v_role IS NULL THEN
        PERFORM runhub._raise('projects.notFound', jsonb_build_object('projectId', p_project));
    END IF;
    IF runhub._role_rank(v_role) < runhub._role_rank(p_min_role) THEN
        PERFORM runhub._raise('auth.roleRequired', jsonb_build_object('required', p_min_role, 'role', v_role));
    END IF;
    RETURN v_role;
END
$$;

-- Whether tz is a time zone a project may use (runhub.timezones: UTC or an IANA Area/Location name).
-- PL/pgSQL: its query's plan is cached for the session (a SQL function with a SET clause is
-- planned on every call, and the clock calls this four times a digest).
CREATE OR REPLACE FUNCTION runhub._is_timezone(p_tz text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN EXISTS (SELECT 1 FROM runhub.timezones WHERE name = p_tz); END $$;

-- Text trimmed of every kind of leading and trailing white space: Unicode's White_Space characters,
-- the zero-width space and the byte-order mark. A list, not [[:space:]], whose meaning is the
-- database locale's (ASCII alone under C). No SET clause: inlined where it is used (ingest trims
-- every name), not planned on every call.
CREATE OR REPLACE FUNCTION runhub._trim(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.btrim(p_text, E' \t\n\u000b\f\r\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u200b\ufeff') $$;

-- A new id that sorts by creation: a UUID of version 7 (RFC 9562): 48 bits of Unix milliseconds, then
-- 74 random bits (gen_random_uuid's, which draws on pg_strong_random), version and variant set.
-- New keys land at the right edge of a B-tree instead of on a random leaf: with a million projects,
-- a random key made each insert dirty a page not written since the last checkpoint, whose full
-- image went to the WAL (18 kB of WAL per create_project instead of 0.7).
CREATE OR REPLACE FUNCTION runhub._time_ordered_uuid()
RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                                          PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                                          FROM 1 FOR 6),
                                  52, 1), 53, 1), 'hex')::uuid
$$;

-- Create a project; its owner becomes its first member. Returns the project id.
CREATE OR REPLACE FUNCTION runhub.create_project(
    name text, owner uuid, timezone text, currency text,
    locale text DEFAULT 'en', industry text DEFAULT NULL, id uuid DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_name ALIAS FOR name;
    p_owner ALIAS FOR owner;
    p_timezone ALIAS FOR timezone;
    p_currency ALIAS FOR currency;
    p_locale ALIAS FOR locale;
    p_industry ALIAS FOR industry;
    p_id ALIAS FOR id;
    v_id uuid;
BEGIN
    IF p_name IS NULL OR length(runhub._trim(p_name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM runhub._invalid('common.invalidInput', 'name', 'must be 1 to 200 characters');
    END IF;
    IF p_owner IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'owner', 'is required');
    END IF;
    IF p_timezone IS NULL OR NOT runhub._is_timezone(p_timezone) THEN
        PERFORM runhub._raise('projects.invalidTimezone', jsonb_build_object('timezone', p_timezone));
    END IF;
    IF p_currency IS NULL OR NOT EXISTS (SELECT 1 FROM runhub.currencies WHERE code = p_currency) THEN
        PERFORM runhub._raise('projects.invalidCurrency', jsonb_build_object('currency', p_currency));
    END IF;
    IF p_locale IS NULL OR p_locale <> ALL (runhub._locales()) THEN
        PERFORM runhub._raise('projects.invalidLocale', jsonb_build_object(
            'locale', p_locale, 'supported', array_to_string(runhub._locales(), ', ')));
    END IF;
    IF p_industry IS NOT NULL AND p_industry !~ '^[a-z][a-z0-9_-]{0,39}$' THEN
        PERFORM runhub._invalid('common.invalidInput', 'industry',
                                'must be a lower-case tag of at most 40 characters');
    END IF;
    -- The caller's id makes the call safe to retry (and lets a proxy place the shop before it
    -- exists): a second call with it, by the same owner, answers the first one's project.
    v_id := coalesce(p_id, runhub._time_ordered_uuid());
    INSERT INTO runhub.projects (id, name, owner_id, timezone, currency, locale, industry)
    VALUES (v_id, runhub._trim(p_name), p_owner, p_timezone, p_currency, p_locale, p_industry)
    ON CONFLICT (id) DO NOTHING;  -- a concurrent call with the id waits here for the first to commit
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM runhub.projects p WHERE p.id = v_id AND p.owner_id = p_owner) THEN
            RETURN v_id;  -- a replay: the first call's project, unchanged
        END IF;
        PERFORM runhub._raise('projects.idInUse', jsonb_build_object('projectId', v_id));
    END IF;
    INSERT INTO runhub.project_members (project_id, user_id, role) VALUES (v_id, p_owner, 'owner');
    RETURN v_id;
END
$$;

-- As actor, add a member or change a member's role. Owners manage everyone; admins add and change
-- members and admins but never make or touch an owner; members manage nobody. A project always
-- keeps an owner.
CREATE OR REPLACE FUNCTION runhub.add_member(project uuid, actor uuid, member uuid, role text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_user ALIAS FOR member;
    p_role ALIAS FOR role;
    v_actor_role  text;
    v_target_role text;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor, 'admin');
    IF p_user IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'user', 'is required');
    END IF;
    IF p_role IS NULL OR p_role NOT IN ('owner', 'admin', 'member') THEN
        PERFORM runhub._invalid('common.invalidInput', 'role', 'must be owner, admin or member');
    END IF;
    -- Lock the project row, then read the roles again: concurrent demotions must not both see
    -- "another owner remains", nor an actor act on a role taken from it meanwhile.
    PERFORM 1 FROM runhub.projects WHERE id = p_project FOR UPDATE;
    v_actor_role := runhub._authorize(p_project, p_actor, 'admin');
    SELECT m.role INTO v_target_role FROM runhub.project_members m
     WHERE m.project_id = p_project AND m.user_id = p_user;
    IF v_actor_role <> 'owner' AND 'owner' IN (p_role, v_target_role) THEN
        PERFORM runhub._raise('auth.roleRequired', jsonb_build_object('required', 'owner', 'role', v_actor_role));
    END IF;
    INSERT INTO runhub.project_members (project_id, user_id, role) VALUES (p_project, p_user, p_role)
    ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role
    WHERE runhub.project_members.role IS DISTINCT FROM excluded.role;
    IF NOT EXISTS (SELECT 1 FROM runhub.project_members WHERE project_id = p_project AND role = 'owner') THEN
        PERFORM runhub._raise('projects.lastOwner', jsonb_build_object('projectId', p_project));
    END IF;
END
$$;

-- Before migration 0018 each project counted its create_run calls in a sequence of its own
-- (projects.create_run_counter). Retire one project's: the count of the current minute of runhub's
-- clock moves into its runhub.create_run_counts row, the sequence is dropped, the column set null.
-- The caller holds the project row (FOR NO KEY UPDATE, as create_run does), so no call is counted
-- in between.
CREATE OR REPLACE FUNCTION runhub._retire_create_run_counter(p_project uuid, p_counter regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_minute bigint := floor(extract(epoch FROM runhub._now()) / 60);
    v_last   bigint := pg_sequence_last_value(p_counter);  -- minute * 2^20 + calls in it
BEGIN
    IF v_last >> 20 = v_minute THEN
        INSERT INTO runhub.create_run_counts (project_id, minute, calls)
        VALUES (p_project, v_minute, v_last & ((1 << 20) - 1))
        ON CONFLICT (project_id) DO NOTHING;
    END IF;
    EXECUTE format('DROP SEQUENCE %s', p_counter);
    UPDATE runhub.projects SET create_run_counter = NULL WHERE id = p_project;
END
$$;

-- Retire up to p_batch projects' counters (the ids after p_after, in id order), each under its
-- project row lock; for `runhub deploy`, which calls it once a transaction until none is left, so
-- no transaction holds more than a batch's locks. Returns how many it retired and the last id it
-- looked at (null: none left after p_after).
CREATE OR REPLACE FUNCTION runhub._retire_create_run_counters(p_after uuid, p_batch int,
                                                              OUT retired int, OUT last_id uuid)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_project record;
BEGIN
    retired := 0;
    FOR v_project IN
        SELECT p.id, p.create_run_counter FROM runhub.projects p
         WHERE p.id > coalesce(p_after, '00000000-0000-0000-0000-000000000000') AND p.create_run_counter IS NOT NULL
         ORDER BY p.id LIMIT p_batch
           FOR NO KEY UPDATE
    LOOP
        PERFORM runhub._retire_create_run_counter(v_project.id, v_project.create_run_counter);
        retired := retired + 1;
        last_id := v_project.id;
    END LOOP;
END
$$;

-- Projects whose counter is still a sequence: the sequences by name, through pg_class's index on
-- it (no scan of runhub.projects, so a no-op deploy and runhub status stay as fast at a million
-- projects as at one). Migration 0017 named every one create_run_counter_<project id>.
CREATE OR REPLACE FUNCTION runhub._create_run_counters_left()
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) FROM pg_class c
     WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind = 'S'
       AND c.relname >= 'create_run_counter_' AND c.relname < 'create_run_counter`'  -- the prefix: '`' follows '_'
$$;

-- A project deleted before its counter was retired takes the sequence with it.
CREATE OR REPLACE FUNCTION runhub._drop_create_run_counter()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('DROP SEQUENCE IF EXISTS %s', OLD.create_run_counter);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER projects_drop_create_run_counter
    AFTER DELETE ON runhub.projects
    FOR EACH ROW WHEN (OLD.create_run_counter IS NOT NULL) EXECUTE FUNCTION runhub._drop_create_run_counter();

-- As an admin, change project settings. Kept in settings (null removes a key): shopUrl (https link
-- base for recovery links), frequencyCapHours (0-168: no second workflow e-mail to a customer
-- within it; default 16), integrations (connected integrations: payments, email),
-- emailOnlyAttribution (credit a payment to the last workflow mail to the payer's address even
-- without a cart or amount match; default false), senderName (the From name of the shop's mail;
-- default its name) and replyTo (where replies to it go; none by default), both stored as
-- normalized; holdoutPercent (0-50: the share of a money action's eligible recipients left unmailed
-- to measure what the mail caused; default 10). Kept on the project (null: the default):
-- timezone, dailyDigestEnabled (false), dailyDigestHour (9), dailyDigestRecipient (none; needed to
-- turn digests on). A change to any of these four sets the next digest time in this transaction.
-- Returns the settings with the four.
CREATE OR REPLACE FUNCTION runhub.update_project_settings(project uuid, actor uuid, settings jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_settings ALIAS FOR settings;
    c_project_keys CONSTANT text[] := ARRAY['timezone', 'dailyDigestEnabled', 'dailyDigestHour', 'dailyDigestRecipient'];
    v_key     text;
    v_value   jsonb;
    v_project runhub.projects;
    v_changes jsonb := p_settings;  -- what is stored: the values, some normalized
    v_text    text;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor, 'admin');
    IF p_settings IS NULL OR jsonb_typeof(p_settings) <> 'object' THEN
        PERFORM runhub._invalid('common.invalidInput', 'settings', 'must be a JSON object');
    END IF;
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_project FOR NO KEY UPDATE;
    FOR v_key, v_value IN SELECT * FROM jsonb_each(p_settings) LOOP
        IF NOT (v_key = ANY (c_project_keys || ARRAY['shopUrl', 'frequencyCapHours', 'integrations', 'emailOnlyAttribution',
                                                     'senderName', 'replyTo', 'holdoutPercent'])) THEN
            PERFORM runhub._raise('common.unknownField', jsonb_build_object('field', v_key));
        END IF;
        CASE v_key
        WHEN 'shopUrl' THEN
            IF v_value <> 'null' AND (jsonb_typeof(v_value) <> 'string' OR length(v_value #>> '{}') > 500
               OR (v_value #>> '{}') !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#]*)?$') THEN
                PERFORM runhub._invalid('common.invalidInput', 'shopUrl', 'must be an http(s) URL without query or fragment');
            END IF;
        WHEN 'frequencyCapHours' THEN
            IF v_value <> 'null' AND (jsonb_typeof(v_value) <> 'number' OR (v_value::text) !~ '^\d{1,3}$'
               OR (v_value::text)::int > 168) THEN
                PERFORM runhub._invalid('common.invalidInput', 'frequencyCapHours', 'must be a whole number of hours, 0 to 168');
            END IF;
        WHEN 'holdoutPercent' THEN
            IF v_value <> 'null' AND (jsonb_typeof(v_value) <> 'number' OR (v_value::text) !~ '^\d{1,2}$'
               OR (v_value::text)::int > runhub._constant('maxHoldoutPercent')) THEN
                PERFORM runhub._invalid('common.invalidInput', 'holdoutPercent', 'must be a whole percent, 0 to 50');
            END IF;
        WHEN 'senderName' THEN
            -- A display name: one line (white space runs are one space), no control character.
            v_text := CASE WHEN jsonb_typeof(v_value) = 'string' AND length(v_value #>> '{}') <= 1000
                           THEN regexp_replace(runhub._trim(v_value #>> '{}'), '[\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g') END;
            IF v_value <> 'null' AND (v_text IS NULL OR length(v_text) NOT BETWEEN 1 AND 100
                                      OR v_text ~ '[\x01-\x1f\x7f-\x9f]') THEN
                PERFORM runhub._invalid('common.invalidInput', 'senderName', 'must be 1 to 100 characters on one line');
            END IF;
            v_changes := jsonb_set(v_changes, '{senderName}', coalesce(to_jsonb(v_text), 'null'));
        WHEN 'replyTo' THEN
            v_text := CASE WHEN jsonb_typeof(v_value) = 'string' THEN runhub._address(v_value #>> '{}') END;
            IF v_value <> 'null' AND v_text IS NULL THEN
                PERFORM runhub._invalid('common.invalidInput', 'replyTo',
                                        'is not a deliverable e-mail address (ASCII local part, host name, at most 254 characters)');
            END IF;
            v_changes := jsonb_set(v_changes, '{replyTo}', coalesce(to_jsonb(v_text), 'null'));
        WHEN 'emailOnlyAttribution' THEN
            IF v_value <> 'null' AND jsonb_typeof(v_value) <> 'boolean' THEN
                PERFORM runhub._invalid('common.invalidInput', 'emailOnlyAttribution', 'must be true or false');
            END IF;
        WHEN 'integrations' THEN
            IF v_value <> 'null' AND (jsonb_typeof(v_value) <> 'array' OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(v_value) i
                 WHERE jsonb_typeof(i) <> 'string' OR i #>> '{}' NOT IN ('payments', 'email'))) THEN
                PERFORM runhub._invalid('common.invalidInput', 'integrations', 'must be a list of payments, email');
            END IF;
        WHEN 'timezone' THEN
            IF jsonb_typeof(v_value) <> 'string' OR NOT runhub._is_timezone(v_value #>> '{}') THEN
                PERFORM runhub._raise('projects.invalidTimezone', jsonb_build_object('timezone', v_value #>> '{}'));
            END IF;
            v_project.timezone := v_value #>> '{}';
        WHEN 'dailyDigestEnabled' THEN
            IF v_value <> 'null' AND jsonb_typeof(v_value) <> 'boolean' THEN
                PERFORM runhub._invalid('common.invalidInput', 'dailyDigestEnabled', 'must be true or false');
            END IF;
            v_project.digest_enabled := coalesce((v_value #>> '{}')::boolean, false);
        WHEN 'dailyDigestHour' THEN
            IF v_value <> 'null' AND (jsonb_typeof(v_value) <> 'number' OR (v_value::text) !~ '^\d{1,2}$'
               OR (v_value::text)::int > 23) THEN
                PERFORM runhub._invalid('common.invalidInput', 'dailyDigestHour', 'must be a whole hour, 0 to 23');
            END IF;
            v_project.digest_hour := coalesce((v_value #>> '{}')::int, 9);
        WHEN 'dailyDigestRecipient' THEN
            v_project.digest_recipient := CASE WHEN jsonb_typeof(v_value) = 'string' THEN runhub._address(v_value #>> '{}') END;
            IF v_value <> 'null' AND v_project.digest_recipient IS NULL THEN
                PERFORM runhub._invalid('common.invalidInput', 'dailyDigestRecipient',
                                        'is not a deliverable e-mail address (ASCII local part, host name, at most 254 characters)');
            END IF;
        END CASE;
    END LOOP;
    IF v_project.digest_enabled AND v_project.digest_recipient IS NULL THEN
        PERFORM runhub._raise('projects.digestRecipientRequired', '{}');
    END IF;
    UPDATE runhub.projects p
       SET settings = jsonb_strip_nulls(p.settings || (v_changes - c_project_keys)),
           timezone = v_project.timezone, digest_enabled = v_project.digest_enabled,
           digest_hour = v_project.digest_hour, digest_recipient = v_project.digest_recipient,
           digest_next_at = CASE WHEN NOT (p_settings ?| c_project_keys) THEN p.digest_next_at
                                 WHEN v_project.digest_enabled
                                 THEN runhub.next_digest_at(v_project.timezone, v_project.digest_hour, now()) END
     WHERE p.id = p_project
    RETURNING * INTO v_project;
    RETURN runhub._settings_json(v_project);
END
$$;

-- A project's settings as update_project_settings returns them.
CREATE OR REPLACE FUNCTION runhub._settings_json(p runhub.projects)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p.settings || jsonb_build_object(
        'timezone', p.timezone, 'dailyDigestEnabled', p.digest_enabled, 'dailyDigestHour', p.digest_hour,
        'dailyDigestRecipient', p.digest_recipient, 'dailyDigestNextAt', runhub._iso(p.digest_next_at));
END
$$;
