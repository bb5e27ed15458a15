"""Depth of a session's span forest, from its compact parent map (span id -> parent id).

Stage 1 keeps only each span's id and parent id (``session.SessionState.parents``) and
measures the tree when the session closes, so the depth does not depend on the order the
spans arrived in. A span whose parent was never seen counts as a root; ``""`` stands for
"no parent".
"""

from __future__ import annotations

# Levels ``tree_depth`` peels before it walks instead (agent span trees are a few deep).
PEEL_LEVELS = 8


def tree_depth(parents: dict[str, str]) -> int:
    """Levels in the span forest; a span whose parent was never seen counts as a root.

    Linear in the spans. A parent cycle (only hostile input can make one) is cut where the
    walk meets it; visiting ids in sorted order keeps even that independent of arrival order.

    >>> tree_depth({"r": "", "a": "r", "b": "a", "c": "missing"})
    3
    >>> tree_depth({"x": "y", "y": "x"}), tree_depth({})
    (2, 0)
    """
    # Peel the leaves (spans no remaining span points at) level by level: the rounds needed
    # are the depth of the deepest leaf, and a round is a few set operations in C, where a
    # walk per span costs a Python loop. Rounds cost depth x spans: deep forests are walked.
    alive = set(parents)
    pointed_at = set(parents.values())  # the first round's, alive being every span
    levels = 0
    while alive:
        if levels:
            if levels == PEEL_LEVELS:
                return _tree_depth_walk(parents)
            pointed_at = set(map(parents.__getitem__, alive))
        if alive <= pointed_at:  # no leaf left: only a cycle does that
            return _tree_depth_cut(parents)
        alive &= pointed_at
        levels += 1
    return levels


def _tree_depth_walk(parents: dict[str, str]) -> int:
    """``tree_depth`` by memoised walks up from every span (linear at any depth)."""
    # Without a cycle no walk can be longer than the forest, and then the walks need no
    # on-path bookkeeping; a walk that gets longer proves a cycle: cut as below.
    depth: dict[str, int] = {}
    limit = len(parents)
    for sid in parents:
        if sid in depth:
            continue
        path = [sid]
        cur = parents[sid]
        while cur in parents and cur not in depth:
            path.append(cur)
            if len(path) > limit:
                return _tree_depth_cut(parents)
            cur = parents[cur]
        base = depth.get(cur, 0)
        for node in reversed(path):
            base += 1
            depth[node] = base
    return max(depth.values(), default=0)


def _tree_depth_cut(parents: dict[str, str]) -> int:
    """``tree_depth`` when the parent map has a cycle: walks in sorted order, cut on a revisit."""
    depth: dict[str, int] = {}
    for sid in sorted(parents):
        path: list[str] = []
        on_path: set[str] = set()
        cur = sid
        while cur in parents and cur not in depth and cur not in on_path:
            path.append(cur)
            on_path.add(cur)
            cur = parents[cur]
        base = depth.get(cur, 0)  # 0 above a root, an unknown parent or a cycle
        for i, node in enumerate(reversed(path), start=1):
            depth[node] = base + i
    return max(depth.values(), default=0)
