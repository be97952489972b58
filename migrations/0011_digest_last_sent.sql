-- projects.digest_last_sent_at goes: nothing read it, and runhub.digests says when each digest was
-- queued. The digest job now claims a project and advances its next time in one write.
-- depends: 0010_attribution_keys

ALTER TABLE runhub.projects DROP COLUMN digest_last_sent_at;
