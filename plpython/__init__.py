"""runhub's PL/Python logic: plain standard-library modules, unit-tested with pytest and shipped
into the server by the loader (see README, "PL/Python packaging")."""
