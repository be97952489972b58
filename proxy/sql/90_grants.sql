-- Who may call what on the proxy. The API's functions get their shards' grants from the deploy
-- (generated with them); these are the routing functions PL/Proxy runs as the calling login.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA runhub_proxy FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    runhub_proxy.partition_of(uuid), runhub_proxy.partition_of_token(text),
    runhub_proxy.reraise(text, text, text, text)
TO runhub_app, runhub_ingest, runhub_reader;
-- Only create_project records a new project (a directory row naming its hash partition).
GRANT EXECUTE ON FUNCTION runhub_proxy.place_project(uuid) TO runhub_app;
