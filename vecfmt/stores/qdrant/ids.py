"""How dump ids and namespaces become Qdrant point ids, and back (docs/qdrant.md, "Ids and namespaces").

Qdrant keys a point by an unsigned 64-bit integer or a UUID; dump ids are any string, unique per namespace,
and Qdrant has no namespaces. The rule, so that any producer can compute the same point ids:

- default namespace: an id in canonical UUID text (what ``str(uuid.UUID(id))`` gives back) is the point's
  UUID; an id in canonical unsigned decimal (``0`` or no leading zero, below 2^64) is the point's integer;
  any other id is ``uuid5(ID_NAMESPACE, id)``, the same UUID Weaviate's rule gives (spec appendix A).
- any other namespace N: ``uuid5(ID_NAMESPACE, f"{len(N.encode())}:{N}:{id}")`` for every id (the length
  prefix keeps ``("a:b", "c")`` and ``("a", "b:c")`` apart), and N is kept in the payload key ``NAMESPACE_KEY``.
- a mapped id is kept as it was in the payload key ``ID_KEY``; an export gives that back as the ``id``.
"""

from __future__ import annotations

import uuid

# uuid5(NAMESPACE_URL, "vecfmt:id"): the namespace of vecfmt's UUIDv5 ids (shared with the Weaviate rule).
ID_NAMESPACE = uuid.UUID("caaac9a8-4798-542f-b4b1-133f62df7883")
ID_KEY = "_vecfmt_id"
NAMESPACE_KEY = "_vecfmt_namespace"
MAX_UINT64 = 2**64 - 1


def point_id(record_id: str, namespace: str = "") -> tuple[int | str, bool]:
    """The point id for ``record_id`` in ``namespace``, and whether it was mapped (then ``ID_KEY`` keeps it)."""
    if namespace:
        return str(uuid.uuid5(ID_NAMESPACE, f"{len(namespace.encode())}:{namespace}:{record_id}")), True
    if record_id.isdigit() and record_id.isascii() and (record_id == "0" or record_id[0] != "0"):
        value = int(record_id)
        if value <= MAX_UINT64:
            return value, False
    elif len(record_id) == 36:
        try:
            if str(uuid.UUID(record_id)) == record_id:
                return record_id, False
        except ValueError:
            pass
    return str(uuid.uuid5(ID_NAMESPACE, record_id)), True


def point_order(point: int | str) -> tuple[int, int]:
    """Where a point id sorts in a scroll: integers first, then UUIDs by their 128 bits (the server's
    ``ExtendedPointId`` order, and the local mode's: ``("", n)`` before the canonical UUID text)."""
    return (0, point) if isinstance(point, int) else (1, uuid.UUID(point).int)


def record_id(point: int | str, payload: dict[str, object]) -> str:
    """The dump id of a point: its ``ID_KEY`` when it has a text one, else the point id as text."""
    original = payload.pop(ID_KEY, None)
    return original if isinstance(original, str) else str(point)
