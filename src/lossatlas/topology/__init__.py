"""Topology primitives: pure numpy in, plain results out; nothing here knows torch or the store."""
from .graphs import (
    REPRESENTATIONS,
    delaunay_edges,
    gabriel_edges,
    grid_edges,
    knn_edges,
    lower_star_pairs,
    representation_edges,
)
from .merge_tree import MergeTree, merge_tree
from .smad import smad

__all__ = ["REPRESENTATIONS", "MergeTree", "delaunay_edges", "gabriel_edges", "grid_edges", "knn_edges",
           "lower_star_pairs", "merge_tree", "representation_edges", "smad"]
