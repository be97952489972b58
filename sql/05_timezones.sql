-- The time zones a project may use: UTC and the IANA Area/Location names this server knows.
-- pg_timezone_names also lists abbreviations and legacy names (EST is UTC-5 all year, localtime
-- follows the host's config) and the posix/ and right/ copies: none of those is a place a shop is in.
-- Refreshed on every deploy (a tzdata upgrade on the server shows up at the next deploy).
INSERT INTO runhub.timezones (name)
SELECT name FROM pg_timezone_names
 WHERE name = 'UTC' OR (name ~ '^[A-Za-z]+/' AND name !~ '^(posix|right)/')
ON CONFLICT (name) DO NOTHING;
DELETE FROM runhub.timezones t
 WHERE NOT EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = t.name);
