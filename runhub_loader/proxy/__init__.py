"""runhub past one server: a proxy database that routes runhub's API to shard databases (PL/Proxy)."""
