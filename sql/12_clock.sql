-- The DST-safe clock of daily digests: when a project's local hour next comes round, and which UTC
-- instants make up one of its local calendar days. Both build instants from local wall-clock
-- timestamps (never `::date` on a timestamptz, never "now() - 1 day").
--
-- Resolving a wall-clock time W in a zone: the instant wanted is the first one at which the local
-- clock shows W or later, min{t : local(t) >= W}. PostgreSQL's `W AT TIME ZONE zone` does not give
-- that where W is not a single instant: in a spring-forward gap it reads W with the offset in force
-- before the gap, an instant as far past the gap's end as W is past its start (02:30 in New York on
-- its spring day gives 03:30 EDT, not 03:00 EDT; Chatham's 03:00, in its 02:45-03:45 gap, gives
-- 04:00); in a fall-back overlap it picks the later of the two instants (01:00 in New York on its
-- fall day gives 01:00 EST, not the first 01:00 EDT). So neither function uses that reading. They
-- sample the zone's UTC offset a day before and a day after W read as UTC; every instant whose
-- local time is near W lies between the two (offsets are within +-16 h), and tzdata never changes
-- a zone's offset twice within 48 hours (3.9 days at least, since 1800), so at most one change lies
-- between them. W read with the earlier offset, when the clock does show W then, is the first
-- instant (the earlier of two in an overlap); else W read with the later offset; else W is in a gap
-- and the answer is the change itself, the first instant after the gap, found by bisection on whole
-- seconds (tzdata's offsets and changes are whole seconds) in the gap's span: at most 17 steps for
-- a skipped day, 12 for an hour, and only on the day of a change.

-- The first instant at which the local clock of p_tz shows p_wall or later (see the top of this
-- file): p_wall itself where it exists, the first of two in an overlap, the end of a gap.
CREATE OR REPLACE FUNCTION runhub._resolve_wall(p_wall timestamp, p_tz text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_early interval := ((p_wall - interval '1 day') AT TIME ZONE 'UTC') AT TIME ZONE p_tz - (p_wall - interval '1 day');
    v_late  interval := ((p_wall + interval '1 day') AT TIME ZONE 'UTC') AT TIME ZONE p_tz - (p_wall + interval '1 day');
    v_utc   timestamp := p_wall - v_early;  -- the answer, as a UTC wall-clock time
    v_lo    timestamp;
    v_mid   timestamp;
BEGIN
    IF v_early <> v_late AND ((v_utc AT TIME ZONE 'UTC') AT TIME ZONE p_tz) <> p_wall THEN
        v_utc := p_wall - v_late;
        IF ((v_utc AT TIME ZONE 'UTC') AT TIME ZONE p_tz) <> p_wall THEN
            -- A gap: the clock jumps over p_wall at an instant in (p_wall - v_late, p_wall - v_early].
            v_lo := p_wall - v_late;
            v_utc := p_wall - v_early;
            WHILE v_utc - v_lo > interval '1 second' LOOP
                v_mid := date_trunc('second', v_lo + (v_utc - v_lo) / 2);
                IF ((v_mid AT TIME ZONE 'UTC') AT TIME ZONE p_tz) >= p_wall THEN
                    v_utc := v_mid;
                ELSE
                    v_lo := v_mid;
                END IF;
            END LOOP;
        END IF;
    END IF;
    RETURN v_utc AT TIME ZONE 'UTC';
END
$$;

-- The first instant strictly after p_after at which the local clock of p_timezone shows p_hour:00,
-- counting each local calendar day once: where the hour falls in a spring-forward gap, the first
-- instant after the gap (on that day); where it occurs twice, the first time only; a day the zone
-- skipped altogether (Pacific/Apia 2011-12-30) has none. Iterating it (after := result) gives one
-- instant per local day, skipping none. PT400 for an unknown zone, an hour outside 0-23, an
-- instant that is null, infinite or outside the years 1 to 9999.
CREATE OR REPLACE FUNCTION runhub.next_digest_at(timezone text, hour int, after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_timezone ALIAS FOR timezone;
    p_hour ALIAS FOR hour;
    p_after ALIAS FOR after;
    v_day date;
    v_at  timestamptz;
BEGIN
    IF p_timezone IS NULL OR NOT runhub._is_timezone(p_timezone) THEN
        PERFORM runhub._raise('projects.invalidTimezone', jsonb_build_object('timezone', p_timezone));
    END IF;
    IF p_hour IS NULL OR p_hour NOT BETWEEN 0 AND 23 THEN
        PERFORM runhub._invalid('common.invalidInput', 'hour', 'must be a whole hour, 0 to 23');
    END IF;
    IF p_after IS NULL OR NOT isfinite(p_after)
       OR p_after < '0001-01-01 00:00:00+00' OR p_after >= '10000-01-01 00:00:00+00' THEN
        PERFORM runhub._invalid('common.invalidInput', 'after', 'must be a finite instant in the years 1 to 9999');
    END IF;
    -- The local date of p_after (a timestamp's date: the zone's wall clock, not the session's).
    -- No earlier day's p_hour can come after p_after; each day's comes later than the previous
    -- day's, so the first day whose p_hour:00 is after p_after is the answer: this day, the next,
    -- or (a day skipped, or the clock set back across midnight) one of the two after that.
    v_day := (p_after AT TIME ZONE p_timezone)::date;
    FOR v_step IN 0..5 LOOP
        v_at := runhub._resolve_wall(v_day + make_interval(hours => p_hour), p_timezone);
        -- After the gap but still on v_day (not on a later day: v_day was skipped).
        IF v_at > p_after AND (v_at AT TIME ZONE p_timezone)::date = v_day THEN
            RETURN v_at;
        END IF;
        v_day := v_day + 1;
    END LOOP;
    RAISE EXCEPTION 'runhub.next_digest_at: no % o''clock in the six days after % in %', p_hour, p_after, p_timezone
        USING ERRCODE = 'XX000';  -- unreachable with tzdata's rules (see the top of this file)
END
$$;

-- local_day_range without its checks, for a zone and day known to be good (a project's: the digest
-- job's ranges). Each bound is the first instant at which the clock shows midnight or later; a
-- skipped day is 'empty'. No SET clause: an expression inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._local_day_range(p_day date, p_timezone text)
RETURNS tstzrange
LANGUAGE sql STABLE
AS $$ SELECT tstzrange(runhub._resolve_wall(p_day::timestamp, p_timezone),
                       runhub._resolve_wall((p_day + 1)::timestamp, p_timezone), '[)') $$;

-- The UTC range [start, end) of local calendar day p_day in p_timezone: start is the first instant
-- whose local date is p_day (01:00 on America/Santiago's spring day, whose midnight is in the gap),
-- end the next day's start; 23, 24 or 25 hours long (23.5 or 24.5 at Australia/Lord_Howe).
-- Consecutive days' ranges neither overlap nor leave a gap. A day the zone skipped (Pacific/Apia
-- 2011-12-30) is an empty range; where the clock was set back across midnight (America/Goose_Bay,
-- 00:01 to 23:01 until 2010), the repeated minutes of the earlier date belong to the later day's
-- range. PT400 for an unknown zone, or a day that is null, infinite or outside the years 1 to 9999.
CREATE OR REPLACE FUNCTION runhub.local_day_range(day date, timezone text)
RETURNS tstzrange
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_day ALIAS FOR day;
    p_timezone ALIAS FOR timezone;
BEGIN
    IF p_day IS NULL OR NOT isfinite(p_day) OR p_day NOT BETWEEN '0001-01-01' AND '9999-12-31' THEN
        PERFORM runhub._invalid('common.invalidInput', 'day', 'must be a finite date in the years 1 to 9999');
    END IF;
    IF p_timezone IS NULL OR NOT runhub._is_timezone(p_timezone) THEN
        PERFORM runhub._raise('projects.invalidTimezone', jsonb_build_object('timezone', p_timezone));
    END IF;
    RETURN runhub._local_day_range(p_day, p_timezone);
END
$$;

-- runhub's clock: the current instant as runhub's rules see it, read by the create_run rate limit
-- and the digest job's due times. clock_timestamp() shifted by runhub.clock_offset (migration
-- 0016): zero in production, and only its owner and superusers can change it (no runhub role has
-- any privilege on it, and it is no setting a session could SET), so no client can move the clock
-- past a limit. Tests shift it to a known second of a minute instead of sleeping for a fresh one
-- (tests/db/conftest.py db_clock, tests/sql/helpers.psql pg_temp.set_clock).
CREATE OR REPLACE FUNCTION runhub._clock_offset()
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT o.shift FROM runhub.clock_offset o), interval '0') $$;

-- The current instant, shifted (above): clock_timestamp() + runhub._clock_offset(). (A
-- transaction's start as runhub sees it, for rules that read now(): now() + runhub._clock_offset().)
CREATE OR REPLACE FUNCTION runhub._now()
RETURNS timestamptz
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT clock_timestamp() + runhub._clock_offset() $$;
