-- When a customer's name and locale were given: the merge keeps the latest given, whatever order
-- events arrive in (an import of older history after newer events used to put an older name back).
-- Null on rows from before: their name counts as of their last_seen_at, as the old merge had it.
-- depends: 0024_analyst_role
ALTER TABLE runhub.customers ADD COLUMN name_at timestamptz, ADD COLUMN locale_at timestamptz;
