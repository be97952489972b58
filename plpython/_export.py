"""Marks a module-level function as a SQL function for the loader to generate."""


def sql_function(signature: str, *, volatility: str = "immutable"):
    """Export fn as the SQL function `signature`, e.g. "runhub._f(p_x jsonb) RETURNS jsonb".

    The loader generates a thin plpython3u wrapper calling fn with the SQL arguments in order
    (jsonb arrives as dict/list through the jsonb_plpython3u transform, numbers as Decimal).
    """
    if volatility not in ("immutable", "stable", "volatile"):
        raise ValueError(f"bad volatility {volatility!r}")

    def mark(fn):
        fn.__runhub_sql__ = {"signature": signature, "volatility": volatility}
        return fn

    return mark
