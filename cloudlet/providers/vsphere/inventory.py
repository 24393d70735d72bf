"""Reading the inventory through the PropertyCollector, with explicit paths.

Every read goes through ``RetrievePropertiesEx`` with named property paths,
never through pyVmomi's attribute access: that access asks for one property
per call, and on govmomi's simulator (0.24.2) reading an unset property that
way panics the server, which the client sees as a dropped connection. Unset
properties simply do not come back from ``RetrievePropertiesEx``. Reading
many objects in one call is also what keeps ``observe`` at a couple of
round trips whatever the cloudlet's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cloudlet.providers.vsphere.sdk import vim, vmodl

PC = vmodl.query.PropertyCollector
Props = dict[str, Any]
#: Type name -> property paths to read for objects of that type.
Wanted = Mapping[Any, Sequence[str]]


def children(
    obj: Any, path: str = "childEntity", kind: Any = vim.Folder, *, grandchildren: bool = False
) -> Any:
    """An object set: the objects listed in ``obj``'s ``path`` property (not ``obj``),
    and with ``grandchildren`` those of its child folders too."""
    deeper = (
        [PC.TraversalSpec(name=f"{path}-below-{obj._moId}", type=kind, path=path, skip=False)]
        if grandchildren
        else []
    )
    hop = PC.TraversalSpec(
        name=f"{path}-of-{obj._moId}", type=kind, path=path, skip=False, selectSet=deeper
    )
    return PC.ObjectSpec(obj=obj, skip=True, selectSet=[hop])


def itself(obj: Any) -> Any:
    return PC.ObjectSpec(obj=obj, skip=False)


def retrieve(
    content: Any, object_sets: Iterable[Any], wanted: Wanted, *, missing_ok: bool = False
) -> list[tuple[Any, Props]]:
    """One filter over all ``object_sets``; pages through big answers.

    With ``missing_ok`` a starting object deleted meanwhile (an owner's
    folder removed by a concurrent delete) contributes nothing instead of
    failing the whole call with ManagedObjectNotFound.
    """
    object_sets = list(object_sets)
    if not object_sets:
        return []
    prop_sets = [PC.PropertySpec(type=kind, pathSet=list(paths)) for kind, paths in wanted.items()]
    spec = PC.FilterSpec(
        objectSet=object_sets, propSet=prop_sets, reportMissingObjectsInResults=missing_ok
    )
    collector = content.propertyCollector
    result = collector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    found: list[tuple[Any, Props]] = []
    while result is not None:
        found += [
            (o.obj, {p.name: p.val for p in o.propSet or ()})
            for o in result.objects
            if o.propSet or not o.missingSet
        ]
        if not result.token:
            break
        result = collector.ContinueRetrievePropertiesEx(result.token)
    return found


def read(content: Any, obj: Any, paths: Sequence[str]) -> Props:
    """The named properties of one object; raises ManagedObjectNotFound if it is gone."""
    found = retrieve(content, [itself(obj)], {type(obj): paths})
    return found[0][1] if found else {}


def find_path(content: Any, path: str) -> Any | None:
    """An object by inventory path (``DC0/host/DC0_C0``), or None."""
    return content.searchIndex.FindByInventoryPath(path)


def find_child(content: Any, parent: Any, name: str) -> Any | None:
    """``SearchIndex.FindChild``: only for folders no VM is being cloned into.

    govmomi's simulator panics in FindChild (and CreateFolder's duplicate
    check) when it meets a clone still in flight, which has no name yet;
    ``named_child`` is the safe lookup for folders that hold VMs.
    """
    return content.searchIndex.FindChild(parent, name)


def made_or_found(make: Callable[[], Any], find: Callable[[], Any | None]) -> Any:
    """``make()``, or where that fails with DuplicateName (an earlier attempt
    or a concurrent create took the name) the object ``find()`` finds."""
    try:
        return make()
    except vim.fault.DuplicateName:
        found = find()
        if found is None:
            raise
        return found


def named_child(content: Any, parent: Any, name: str, kind: Any) -> Any | None:
    """The child of ``parent`` of type ``kind`` called ``name``, via the collector."""
    for ref, props in retrieve(content, [children(parent)], {kind: ["name"]}):
        if props.get("name") == name:
            return ref
    return None


def last_values(options: Iterable[Any] | None) -> dict[Any, Any]:
    """key -> value of option or custom-field lists, the last entry winning.

    vCenter replaces a key on reconfigure; govmomi's simulator appends a new
    entry instead, so reading "last wins" is right on both.
    """
    return {getattr(o, "key", None): getattr(o, "value", None) for o in options or ()}
