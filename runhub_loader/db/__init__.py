"""The database side: the embedded cluster, deploying the SQL and PL/Python, pg_cron jobs, status."""
