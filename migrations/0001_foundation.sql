-- Foundation: schema, roles, deploy bookkeeping, currencies, projects and their members.
-- depends:

CREATE SCHEMA runhub;
COMMENT ON SCHEMA runhub IS 'Run Hub: workflows, attribution and digests. API functions only; see docs/sql-contract.md';

-- Roles are cluster-wide: another database on this server may have made them already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_app') THEN
        CREATE ROLE runhub_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_sender') THEN
        CREATE ROLE runhub_sender NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_reader') THEN
        CREATE ROLE runhub_reader NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON SCHEMA runhub FROM PUBLIC;
GRANT USAGE ON SCHEMA runhub TO runhub_app, runhub_sender, runhub_reader;
-- EXECUTE on functions is granted by sql/99_grants.sql, which runs last on every deploy.

-- One row per deploy that changed something (the loader skips no-op deploys).
CREATE TABLE runhub.deployments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version      text        NOT NULL,
    checksum     text        NOT NULL,
    migrations   text[]      NOT NULL DEFAULT '{}',
    deployed_at  timestamptz NOT NULL DEFAULT now(),
    deployed_by  text        NOT NULL DEFAULT current_user
);

-- PL/Python modules shipped by the loader; PL/Python functions import them from here, so the
-- server's file system is never touched.
CREATE TABLE runhub.plpython_modules (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
    source       text        NOT NULL,
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    deployed_at  timestamptz NOT NULL DEFAULT now()
);

-- ISO 4217 currencies in use, with their minor units (JPY has none, KWD has three).
CREATE TABLE runhub.currencies (
    code         char(3)  PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    minor_units  smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4)
);
INSERT INTO runhub.currencies (code, minor_units)
SELECT c, CASE
    WHEN c IN ('BIF','CLP','DJF','GNF','ISK','JPY','KMF','KRW','PYG','RWF','UGX','UYI','VND','VUV','XAF','XOF','XPF') THEN 0
    WHEN c IN ('BHD','IQD','JOD','KWD','LYD','OMR','TND') THEN 3
    WHEN c IN ('CLF','UYW') THEN 4
    ELSE 2 END
FROM unnest(string_to_array(
    'AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP '
    'BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB '
    'EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY '
    'KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR '
    'MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB '
    'RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD '
    'TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL',
    ' ')) AS c;

CREATE TABLE runhub.projects (
    id                   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text        NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    owner_id             uuid        NOT NULL,
    timezone             text        NOT NULL,  -- IANA name, checked against pg_timezone_names on write
    currency             char(3)     NOT NULL REFERENCES runhub.currencies (code),
    locale               text        NOT NULL DEFAULT 'en' CHECK (locale IN ('en', 'ar', 'fr', 'es', 'de')),
    industry             text        CHECK (industry ~ '^[a-z][a-z0-9_-]{0,39}$'),
    settings             jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    digest_enabled       boolean     NOT NULL DEFAULT false,
    digest_hour          smallint    NOT NULL DEFAULT 9 CHECK (digest_hour BETWEEN 0 AND 23),
    digest_recipient     text,
    digest_next_at       timestamptz,
    digest_last_sent_at  timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (digest_next_at IS NULL OR digest_enabled)
);
CREATE INDEX projects_digest_due ON runhub.projects (digest_next_at) WHERE digest_next_at IS NOT NULL;

CREATE TABLE runhub.project_members (
    project_id  uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON runhub.project_members (user_id);

-- runhub_reader sees rows of its own projects only (policies live in sql/, re-applied on deploy).
ALTER TABLE runhub.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE runhub.project_members ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON runhub.projects, runhub.project_members TO runhub_reader;
