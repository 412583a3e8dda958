"""Statistics: nearest-rank percentiles and summaries."""


def pct(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    v = sorted(values)
    rank = max(1, min(len(v), int(-(-q * len(v) // 100))))
    return v[rank - 1]


def summary(values):
    if not values:
        return None
    return {
        "count": len(values),
        "min": min(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
