"""The fanout's view of the directory: users, memberships and preferences.

The data lives in Faust tables (changelog-backed, rebuilt on restart); this module holds the
plain-dict views the hot path reads and the per-server member index, and applies directory
events to them. It knows nothing of Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

MEMBER_SEP = "/"


def member_key(server_id: str, user_id: str) -> str:
    return f"{server_id}{MEMBER_SEP}{user_id}"


class MemberIndex:
    """server_id → set of member user_ids, for the partitions this worker owns.

    Rebuilt from the members table after each recovery (rebalance, restart) and kept in step
    with live membership changes; iterating a server's set never copies it.
    """

    def __init__(self) -> None:
        self._by_server: dict[str, set[str]] = {}

    def rebuild(self, member_keys: Iterable[str]) -> None:
        by_server: dict[str, set[str]] = {}
        for key in member_keys:
            server_id, _, user_id = key.partition(MEMBER_SEP)
            by_server.setdefault(server_id, set()).add(user_id)
        self._by_server = by_server

    def add(self, server_id: str, user_id: str) -> None:
        self._by_server.setdefault(server_id, set()).add(user_id)

    def remove(self, server_id: str, user_id: str) -> None:
        members = self._by_server.get(server_id)
        if members is not None:
            members.discard(user_id)
            if not members:
                del self._by_server[server_id]

    def members(self, server_id: str) -> set[str]:
        return self._by_server.get(server_id, _EMPTY)

    def __len__(self) -> int:
        return sum(len(m) for m in self._by_server.values())


_EMPTY: set[str] = set()


class Directory:
    """Read-only lookups the rules use; each mapping is a Faust table's local store."""

    def __init__(
        self,
        *,
        users: Mapping[str, dict[str, Any]],
        channel_levels: Mapping[str, str],
        user_prefs: Mapping[str, dict[str, Any]],
        members: MemberIndex,
    ) -> None:
        self.users = users
        self.channel_levels = channel_levels
        self.user_prefs = user_prefs
        self.members = members


def apply_membership(
    table: MutableMapping[str, Any],
    index: MemberIndex,
    *,
    server_id: str,
    user_id: str,
    active: bool,
    role: str,
) -> None:
    key = member_key(server_id, user_id)
    if active:
        table[key] = role
        index.add(server_id, user_id)
    else:
        if key in table:
            del table[key]
        index.remove(server_id, user_id)
