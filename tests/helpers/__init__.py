"""What the tests share, one module a concern (imported as `helpers.<name>`)."""
