-- A reader of aggregates: the platform's operators see an action's lift across every shop
-- (runhub.platform_lift) and nothing of any one shop.
-- depends: 0023_holdouts

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_analyst') THEN
        CREATE ROLE runhub_analyst NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA runhub TO runhub_analyst;
