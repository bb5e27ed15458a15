"""Task complexity derived from a session's other metrics, when no span declared one."""

from __future__ import annotations

# Derived complexity: weight, metric, half-saturation point. Each term x / (x + k) rises
# monotonically from 0 towards 1 and the weights sum to 1, so the score is in [0, 1).
COMPLEXITY_TERMS: tuple[tuple[float, str, float], ...] = (
    (0.30, "fanout", 8.0),
    (0.20, "llm_calls", 6.0),
    (0.15, "extra_depth", 2.0),
    (0.15, "distinct_tools", 4.0),
    (0.20, "context_tokens", 32_000.0),
)


def derive_complexity(*, fanout: int, llm_calls: int, depth: int, distinct_tools: int,
                      context_tokens: int) -> float:
    """Complexity in [0, 1) from the other metrics, non-decreasing in each of them.

    ``extra_depth`` is depth beyond 2 (a root and its direct children is the flat baseline).

    >>> derive_complexity(fanout=0, llm_calls=0, depth=1, distinct_tools=0, context_tokens=0)
    0.0
    >>> derive_complexity(fanout=8, llm_calls=6, depth=4, distinct_tools=4, context_tokens=32000)
    0.5
    """
    values = {"fanout": fanout, "llm_calls": llm_calls, "extra_depth": max(depth - 2, 0),
              "distinct_tools": distinct_tools, "context_tokens": context_tokens}
    score = sum(w * values[name] / (values[name] + k) for w, name, k in COMPLEXITY_TERMS)
    return round(min(score, 1.0), 6)
