"""What a store reads back is what was written: checksums, and links refused.

HDF5 checksums its object headers but neither data nor the strings that attributes point to, so
a flipped byte there would otherwise read as a value. Nodes carry a ``checksum`` of what they
hold, recomputed when read. These helpers know nothing of what the nodes mean.
"""
from __future__ import annotations

import hashlib

import h5py
import numpy as np

from ..errors import StoreError

STAMP = ("encoding-type", "encoding-version")


def checked_attrs(node: h5py.Group) -> dict:
    """A node's attributes as its checksum covers them: all but the flag set after it and the checksums."""
    return {k: v for k, v in node.attrs.items() if k != "complete" and not k.startswith("checksum")}


def checksum(node: h5py.Group, **sections: dict) -> str:
    """sha256 of a node's path and content: per section (attrs, metrics, arrays) each name with its
    value, strings as UTF-8, anything else as numpy dtype, shape and bytes."""
    digest = hashlib.sha256()

    def feed(*pieces: bytes) -> None:
        for piece in pieces:
            digest.update(len(piece).to_bytes(8, "little") + piece)

    feed(node.name.encode())
    for section in sorted(sections):
        for name in sorted(sections[section]):
            value = sections[section][name]
            if isinstance(value, (str, bytes)):
                kind, data = type(value).__name__, value.encode() if isinstance(value, str) else value
            else:
                array = np.asarray(value)
                kind = f"{array.dtype.str} {array.shape}"
                data = array.tobytes() if not array.dtype.hasobject else repr(  # strings: h5py reads them as bytes
                    [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]).encode()
            feed(section.encode(), name.encode(), kind.encode(), data)
    return "sha256:" + digest.hexdigest()


def verify(node: h5py.Group, attr: str, required: bool, **sections: dict) -> None:
    """Compare what was read with the checksum written with it. ``required``: the node's encoding
    always carries one, so a missing checksum is damage; otherwise (nodes written before checksums
    were stored) a node without one is read unchecked."""
    stored = node.attrs.get(attr)
    if stored is None and not required:
        return
    if stored is None:
        raise StoreError(f"{node.file.filename}:{node.name} is damaged: its {attr} attribute, which its "
                         f"encoding-version {node.attrs.get('encoding-version')!r} always carries, is missing. "
                         "Nothing was modified; restore the file from a copy or rerun into a new store.")
    if not isinstance(stored, str) or stored != checksum(node, **sections):
        raise StoreError(f"{node.file.filename}:{node.name} is damaged: its content does not match the checksum "
                         "written with it, so it was changed after it was written (a disk, copy or transfer error). "
                         "Nothing was modified; restore the file from a copy or rerun into a new store.")


def child(group: h5py.Group, name: str) -> h5py.Group | h5py.Dataset | None:
    """``group[name]``, or None where there is no such name. lossatlas writes only nodes of the
    store's own file, so a link (to another file, perhaps missing) is damaged or foreign content,
    never read as absent (h5py's ``get`` would)."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{group.name.rstrip('/')}/{name} is a {type(link).__name__}, not a node of this store")
    return group[name]
