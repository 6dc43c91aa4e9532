"""Optional TTK (topologytoolkit) backend for merge-tree persistence of a 2-D grid.

TTK is distributed only through conda (``conda install -c conda-forge topologytoolkit``), so
lossatlas never needs it: ``available()`` tells whether it can be imported, and the native
backend is the default. TTK triangulates the image itself (4 neighbours plus the diagonal
(i + 1, j) - (i, j + 1)), which the native ``triangulated_grid`` representation reproduces;
its pairs can differ from the 8-connected ``image`` representation on pixel-scale features.
Saddle branch information is not extracted (``saddles`` is empty).
This module could not be exercised where lossatlas is developed (no conda); its tests skip
when TTK is absent.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .merge_tree import MergeTree


def available() -> bool:
    try:
        import topologytoolkit  # noqa: F401
        import vtk  # noqa: F401
    except ImportError:
        return False
    return True


def merge_tree_ttk(loss: np.ndarray, representation: str = "triangulated_grid") -> MergeTree:
    """0-dim persistence (minimum-saddle pairs) of ``loss[i, j]`` by ttkPersistenceDiagram."""
    if representation != "triangulated_grid":
        raise ConfigError(f"The TTK backend computes on its own triangulation of the grid "
                          f"(representation='triangulated_grid'); {representation!r} needs backend='native'.")
    if not available():
        raise ConfigError("backend='ttk' needs topologytoolkit and vtk, which install only through conda: "
                          "conda install -c conda-forge topologytoolkit. Use backend='native' otherwise.")
    import topologytoolkit as ttk
    import vtk
    from vtk.util import numpy_support

    values = np.where(np.isfinite(loss), loss, np.finfo(float).max).astype(float)
    nx, ny = values.shape
    image = vtk.vtkImageData()
    image.SetDimensions(nx, ny, 1)
    scalars = numpy_support.numpy_to_vtk(values.ravel(order="F"), deep=True)  # vtk point id = i + nx * j
    scalars.SetName("loss")
    image.GetPointData().AddArray(scalars)
    diagram = ttk.ttkPersistenceDiagram()
    diagram.SetInputDataObject(image)
    diagram.SetInputArrayToProcess(0, 0, 0, 0, "loss")
    diagram.Update()
    output = diagram.GetOutput()
    vertex = numpy_support.vtk_to_numpy(output.GetPointData().GetArray("ttkVertexScalarField"))
    pair_type = numpy_support.vtk_to_numpy(output.GetCellData().GetArray("PairType"))
    finite = numpy_support.vtk_to_numpy(output.GetCellData().GetArray("IsFinite"))
    flat = np.where(np.isfinite(loss), loss, np.inf).ravel()
    pairs, pair_vertices = [], []
    for cell in range(output.GetNumberOfCells()):
        if pair_type[cell] != 0:  # 0: minimum-saddle pairs; -1 is the diagonal
            continue
        ids = output.GetCell(cell).GetPointIds()
        birth_vtk, death_vtk = vertex[ids.GetId(0)], vertex[ids.GetId(1)]
        birth = (birth_vtk % nx) * ny + birth_vtk // nx  # back to row-major (i, j)
        death = (death_vtk % nx) * ny + death_vtk // nx
        essential = not finite[cell]
        pairs.append((flat[birth], np.inf if essential else flat[death]))
        pair_vertices.append((birth, -1 if essential else death))
    pairs = np.array(pairs, dtype=float).reshape(-1, 2)
    keep = pairs[:, 1] > pairs[:, 0]
    pairs, pair_vertices = pairs[keep], np.array(pair_vertices, dtype=np.int64).reshape(-1, 2)[keep]
    order = np.lexsort((-(pairs[:, 1] - pairs[:, 0]), np.isinf(pairs[:, 1])))  # essential last
    return MergeTree(flat, pairs[order], pair_vertices[order],
                     np.empty((0, 3), dtype=np.int64), int((~np.isfinite(loss)).sum()))
