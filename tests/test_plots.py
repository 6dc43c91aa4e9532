import dataclasses
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from lossatlas import Recipe, Store, analyze, plots, train_minima
from lossatlas import registry as registry_module
from lossatlas.analyzer import Analyzer, View, as_view, measure, view
from lossatlas.methods import merge_tree_views
from lossatlas.problems import himmelblau
from lossatlas.registry import GROUP, Registry, get
from lossatlas.testing import analyzer_checks
from plugins.loss_profile import LossProfile

_SETTINGS = {"merge-tree": dict(directions="axes", at="theta0", span=5.0, resolution=15)}
_VIEWS = {name: get(name).views for name in ("merge-tree", "loss-barcode", "jump-retrain", "hessian")}
_INSTALLED = registry_module.available()  # every analyzer lossatlas ships (and any installed plugin)
CONTOUR, SURFACE, TREE = (_VIEWS["merge-tree"][name] for name in ("contour", "surface", "merge_tree"))
BARCODE, PHATE = _VIEWS["loss-barcode"]["barcode"], _VIEWS["jump-retrain"]["phate"]
DENSITY = _VIEWS["hessian"]["density"]


@pytest.fixture(scope="module")
def results():
    """One real result per installed analyzer on Himmelblau, with fast settings (as the conformance
    suite: two short descents first for those that read stored minima)."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(), Store.memory() as store:
        patch.setenv("TQDM_DISABLE", "1")
        warnings.simplefilter("ignore", RuntimeWarning)  # PHATE's SGD-MDS convergence note
        subject = himmelblau()
        minima = max(get(name).smoke_minima for name in _INSTALLED)
        if minima:
            train_minima(store, subject, Recipe(lr=0.005, momentum=0.0, epochs=2, batch_size=None),
                         seeds=range(minima), progress=False)
        return {name: analyze(store, subject, name, progress=False, **_SETTINGS.get(name, get(name).smoke_params))
                for name in _INSTALLED}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _with(result, **arrays):
    return dataclasses.replace(result, arrays={**result.arrays, **arrays})


def _collection(ax, label):
    found = [c for c in ax.collections if c.get_label() == label]
    assert len(found) == 1, [c.get_label() for c in ax.collections]
    return found[0]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _draw(view, result):
    figure = plt.figure()
    ax = figure.add_subplot(projection=view.projection)
    view.draw(ax, result)
    figure.canvas.draw()  # rendering, not only artist creation, must survive the data
    return ax


def test_analyzers_declare_their_views():
    assert {name: tuple(views) for name, views in _VIEWS.items()} == {
        "merge-tree": ("contour", "surface", "merge_tree", "persistence"), "loss-barcode": ("barcode", "paths"),
        "jump-retrain": ("phate", "diagram_0", "diagram_1"), "hessian": ("density",)}
    declared = {name: {v: (d.projection, d.shared) for v, d in views.items()} for name, views in _VIEWS.items()}
    assert declared == {
        "merge-tree": {"contour": (None, "colour"), "surface": ("3d", "colour"), "merge_tree": (None, "y"),
                       "persistence": (None, "xy")},
        "loss-barcode": {"barcode": (None, "y"), "paths": (None, "y")},
        "jump-retrain": {"phate": (None, "colour"), "diagram_0": (None, "xy"), "diagram_1": (None, "xy")},
        "hessian": {"density": (None, "xy")}}
    assert get("merge-tree").info()["views"] == {"contour": False, "surface": True, "merge_tree": False,
                                                 "persistence": False}  # recorded with every result


def test_contour_marks_each_minimum_and_saddle(results):
    result = results["merge-tree"]
    assert result.metrics["n_minima"] == 4 and result.metrics["n_saddles"] == 3
    ax = _draw(CONTOUR, result)
    minima = _collection(ax, "minima").get_offsets()
    assert len(minima) == result.metrics["n_minima"]
    assert len(_collection(ax, "saddles").get_offsets()) == result.metrics["n_saddles"]
    # the markers sit at the grid points of the lowest losses (Himmelblau's minima are near 0)
    x, y, loss = result.arrays["x"], result.arrays["y"], result.arrays["loss_grid"]
    at = [loss[np.flatnonzero(x == a)[0], np.flatnonzero(y == b)[0]] for a, b in np.asarray(minima)]
    np.testing.assert_allclose(sorted(at), sorted(result.arrays["pairs"][:, 0]))
    assert len(ax.figure.axes) == 2  # the colorbar
    assert "4 minima" in ax.get_title() and "3 saddles" in ax.get_title()


def test_merge_tree_draws_one_red_saddle_per_saddle_at_its_loss(results):
    result = results["merge-tree"]
    ax = _draw(TREE, result)
    saddles = _collection(ax, "saddles")
    assert len(saddles.get_offsets()) == len(result.arrays["saddles"]) == result.metrics["n_saddles"]
    np.testing.assert_allclose(saddles.get_facecolor()[0], to_rgba(plots.OKABE_ITO["vermillion"]))
    loss = result.arrays["loss_grid"].ravel()
    np.testing.assert_allclose(sorted(np.asarray(saddles.get_offsets())[:, 1]),
                               sorted(loss[result.arrays["saddles"][:, 0]]))
    leaves = np.asarray(_collection(ax, "minima").get_offsets())[:, 1]
    np.testing.assert_allclose(sorted(leaves), sorted(loss[result.arrays["pair_vertices"][:, 0]]))


def _broken(results):
    """For every analyzer: NaN/inf-polluted copies and empty or all-non-finite arrays."""
    mt, lb, jr, he = (results[n] for n in ("merge-tree", "loss-barcode", "jump-retrain", "hessian"))
    grid = mt.arrays["loss_grid"].copy()
    grid[0, :4], grid[7, 7], grid[3, 9] = np.nan, np.inf, -np.inf
    losses = jr.arrays["losses"].copy()
    losses[::3] = np.inf
    losses[1] = np.nan
    n = len(losses)
    return [
        ("polluted", False, _with(mt, loss_grid=grid)),
        ("no saddles", False, _with(mt, saddles=np.empty((0, 3), dtype=np.int64))),
        ("all nan", True, _with(mt, loss_grid=np.full_like(grid, np.nan))),
        ("empty", True, _with(mt, loss_grid=np.full_like(grid, np.inf), pairs=np.empty((0, 2)),
                              pair_vertices=np.empty((0, 2)), saddles=np.empty((0, 3)))),
        ("inf deaths", False, _with(lb, bars=np.array([[0.5, np.inf], [1.0, np.inf]]))),
        ("nan bars", False, _with(lb, bars=np.array([[0.5, np.inf], [np.nan, 2.0], [1.0, np.nan]]))),
        ("empty", True, _with(lb, bars=np.empty((0, 2)), pairs=np.empty((0, 2)), path_t=np.empty((0, 0)),
                              path_losses=np.empty((0, 0)))),
        ("polluted", False, _with(jr, losses=losses)),
        ("all nan", False, _with(jr, losses=np.full(n, np.nan))),
        ("empty", True, _with(jr, embedding=np.empty((0, 2)), losses=np.empty(0), seeds=np.empty(0),
                              step_sizes=np.empty(0), epochs=np.empty(0), diagram_0=np.empty((0, 2)),
                              diagram_1=np.empty((0, 2)))),
        ("zeros", True, _with(he, density=np.zeros_like(he.arrays["density"]))),
        ("nan", True, _with(he, density=np.full_like(he.arrays["density"], np.nan),
                            eigenvalues=np.array([np.nan, np.inf]))),
        ("empty", True, _with(he, density_grid=np.empty(0), density=np.empty(0), eigenvalues=np.empty(0))),
    ]


def test_every_view_draws_nonfinite_and_empty_results(results):
    for case, nothing, result in _broken(results):
        for name, declared in _VIEWS[result.method].items():
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no "posx and posy should be finite" and the like
                ax = _draw(declared, result)
            assert ax.get_title(), (result.method, case, name)
            if nothing and name != "persistence":  # the persistence view reads pairs, not the grid
                assert plots.NO_DATA in _texts(ax), (result.method, case, name)
            plt.close(ax.figure)


def test_analyzer_plots_are_built_from_the_drawers(results):
    for name, result in ((name, results[name]) for name in _VIEWS):
        figure = get(name).from_params({}).plot(result)
        title = figure.axes[0].get_title().lower()
        assert title.startswith(next(iter(_VIEWS[name])).replace("_", " ")), title
        assert figure.get_suptitle() == "himmelblau"
        assert plots.NO_DATA not in _texts(figure.axes[0])
    assert len(get("jump-retrain")().plot(results["jump-retrain"]).axes) == 4  # PHATE, D0, D1, colorbar
    barcode = get("loss-barcode")().plot(results["loss-barcode"])
    assert len(barcode.axes) == 2 and len(barcode.axes[1].lines) == len(results["loss-barcode"].arrays["pairs"])
    ax = plt.figure().add_subplot()
    assert get("hessian")().plot(results["hessian"], ax=ax) is ax.figure and ax.lines
    surface = get("merge-tree")().plot(results["merge-tree"], view="surface")
    assert [a.name for a in surface.axes] == ["3d", "rectilinear"]  # the surface and its colour bar


def test_comparison_figure_puts_variants_side_by_side(results):
    result = results["merge-tree"]
    figure = plots.comparison_figure("skip vs no skip", TREE,
                                     [("skip", result), ("no skip", None), ("wide", _with(result))])
    assert len(figure.axes) == 3
    assert [ax.get_title().split("\n")[0] for ax in figure.axes] == ["skip", "no skip", "wide"]
    assert _texts(figure.axes[1]) == ["not computed"]
    assert figure.get_figwidth() == pytest.approx(plots.PAGE)  # two paper columns
    assert figure.get_suptitle() == "skip vs no skip"
    surfaces = plots.comparison_figure("s", SURFACE, [("a", result), ("b", None)])
    panels = [ax for ax in surfaces.axes if ax.get_label() != "<colorbar>"]
    assert [ax.name for ax in panels] == ["3d", "3d"] and _texts(panels[1]) == ["not computed"]


def _panels(results):
    return [("a", CONTOUR, results["merge-tree"]), ("b", SURFACE, results["merge-tree"]),
            ("c", BARCODE, results["loss-barcode"]), ("d", PHATE, results["jump-retrain"]),
            ("e", DENSITY, results["hessian"])]


def test_panel_figure_grid_and_3d_axes(results):
    figure = plots.panel_figure("variant", _panels(results), ncols=4)
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert [ax.name for ax in panels] == ["rectilinear", "3d", "rectilinear", "rectilinear", "rectilinear"]
    assert [ax.get_title().split("\n")[0] for ax in panels] == list("abcde")
    assert panels[4].get_subplotspec().rowspan.start == 1  # the fifth panel wraps to a second row
    assert figure.get_suptitle() == "variant"


def test_save_figure_is_reproducible(results, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "VECTOR_FORMATS", ("pdf", "svg"))  # SVG is optional: checked here too
    written = [plots.save_figure(plots.panel_figure("v", _panels(results)), tmp_path / run / "beta=1.5")
               for run in ("first", "second")]
    assert [p.name for p in written[0]] == ["beta=1.5.png", "beta=1.5.pdf", "beta=1.5.svg"]
    assert not plt.get_fignums()  # closed
    for first, second in zip(*written):
        data = first.read_bytes()
        assert len(data) > 1000 and data == second.read_bytes(), first.name
    assert written[0][0].read_bytes().startswith(b"\x89PNG") and written[0][1].read_bytes().startswith(b"%PDF")
    assert b"<svg" in written[0][2].read_bytes()[:1000]
    assert b"CreationDate" not in written[0][1].read_bytes() and b"Software" not in written[0][0].read_bytes()


def test_draft_figures_are_a_small_png_only(results, tmp_path):
    full = plots.save_figure(plots.panel_figure("v", _panels(results)), tmp_path / "full")
    with plots.style("draft"):
        draft = plots.save_figure(plots.panel_figure("v", _panels(results)), tmp_path / "draft")
    assert [p.name for p in draft] == ["draft.png"] and not (tmp_path / "draft.pdf").exists()
    assert draft[0].stat().st_size < full[0].stat().st_size / 2  # 100 dpi instead of 300
    after = plots.save_figure(plots.panel_figure("v", _panels(results)), tmp_path / "after")
    assert [p.name for p in after] == ["after.png", "after.pdf"]  # the draft setting ends with its block


def test_comparison_panels_share_one_colour_scale_and_go_logarithmic_over_a_wide_range(results):
    result = results["merge-tree"]
    grid = np.asarray(result.arrays["loss_grid"], dtype=float)
    narrow = _with(result, loss_grid=grid - grid.min() + 1.0)  # losses 1 .. (1 + range)
    shifted = _with(result, loss_grid=2 * (grid - grid.min()) + 5.0)  # 5 .. (5 + 2 range): another panel's range
    figure = plots.comparison_figure("c", CONTOUR, [("a", narrow), ("b", shifted)])
    norms = [ax.collections[0].norm for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert norms[0].vmin == norms[1].vmin == pytest.approx(1.0)  # the lowest loss of both panels
    assert norms[0].vmax == norms[1].vmax == pytest.approx(float(np.nanmax(shifted.arrays["loss_grid"])))
    wide = float(np.nanmax(shifted.arrays["loss_grid"])) > 100  # Himmelblau's grid spans orders of magnitude
    assert type(norms[0]).__name__ == ("LogNorm" if wide else "Normalize")
    flat = _with(result, loss_grid=np.full_like(grid, 3.0))
    levels, norm = plots.contour_levels(flat.arrays["loss_grid"])  # a constant grid still draws
    assert type(norm).__name__ == "Normalize" and levels[0] == 3.0


def test_comparison_panels_of_losses_share_their_y_range(results):
    result = results["loss-barcode"]
    bars = np.asarray(result.arrays["bars"], dtype=float)
    higher = _with(result, bars=np.where(np.isfinite(bars), bars + 100.0, bars))
    figure = plots.comparison_figure("b", BARCODE, [("a", result), ("b", higher)])
    assert figure.axes[0].get_ylim() == figure.axes[1].get_ylim()
    assert figure.axes[0].get_ylim()[1] > 100


def test_figures_are_saved_at_300_dpi_under_the_style_file(results, tmp_path):
    with plots.style():
        assert plt.rcParams["pdf.fonttype"] == 42
        figure = plots.panel_figure("v", _panels(results)[:1])
        width = figure.get_figwidth()
        png, *_ = plots.save_figure(figure, tmp_path / "one")
    assert plt.imread(png).shape[1] == pytest.approx(300 * width, abs=2)


def test_a_surface_of_many_minima_is_drawn_bounded_and_says_so():
    """A noisy imported surface has 10^5 minima: the figure draws the most persistent ones (those
    the merge tree itself ranks highest) and the grid at figure resolution, and says so."""
    from lossatlas.surfaces import SurfaceSubject

    rng = np.random.default_rng(0)
    n = 500  # a 500 x 500 grid: more points than MAX_DRAWN_GRID, more minima than MAX_DRAWN_MINIMA
    x = np.linspace(-1, 1, n)
    loss = np.add.outer(x**2, x**2) + 0.05 * rng.random((n, n))
    with Store.memory() as store:
        result = analyze(store, SurfaceSubject("noisy", x, x, loss), "merge-tree", progress=False)
    n_minima = int(result.metrics["n_minima"])
    assert n_minima > 10 * merge_tree_views.MAX_DRAWN_MINIMA
    figure, (ax_tree, ax_map) = plt.subplots(1, 2)
    TREE.draw(ax_tree, result)
    CONTOUR.draw(ax_map, result)
    leaves = ax_tree.collections[0].get_offsets()
    assert len(leaves) == merge_tree_views.MAX_DRAWN_MINIMA and str(n_minima) in ax_tree.get_xlabel()
    drawn = np.sort(leaves[:, 1])  # the leaves' losses are those of the most persistent pairs
    persistence = result.arrays["pairs"][:, 1] - result.arrays["pairs"][:, 0]
    strongest = np.sort(result.arrays["pairs"][np.argsort(-persistence, kind="stable")[: len(drawn)], 0])
    np.testing.assert_array_equal(drawn, strongest)
    branches = ax_tree.collections[1]  # one collection for every branch, merges only among drawn minima
    assert len(branches.get_segments()) == 2 * (merge_tree_views.MAX_DRAWN_MINIMA - 1)
    marked = [c for c in ax_map.collections if c.get_label() == "minima"][0]
    assert len(marked.get_offsets()) == merge_tree_views.MAX_DRAWN_MINIMA
    notes = " ".join(t.get_text() for t in ax_map.texts)
    assert "1 of every 2 points" in notes and f"of {n_minima} minima" in notes


def test_a_view_is_declared_once_and_a_bare_drawer_is_still_one():
    def draw(ax, result):
        ax.set_title("drawn")

    assert view(draw) == View(draw) and view(draw, projection="3d").projection == "3d"
    draw.projection = "3d"  # the older way: attributes on the drawer
    assert as_view(draw) == View(draw, projection="3d")

    class Legacy(Analyzer):
        name = "legacy"
        metrics = {"x": measure("x")}
        views = {"bare": draw}

    assert Legacy.views["bare"] == View(draw, projection="3d") and Legacy.info()["views"] == {"bare": True}
    ax = plt.figure().add_subplot(projection="3d")
    assert Legacy().plot(None, ax=ax) is ax.figure and ax.get_title() == "drawn"
    for wrong, message in ((dict(projection="polar"), "projection must be one of"),
                           (dict(shared="z"), "shared must be one of"),
                           (dict(shared="colour"), "limits_of go together"),
                           (dict(limits_of=plots.finite_range), "limits_of go together")):
        with pytest.raises(ValueError, match=message):
            view(draw, **wrong)


@pytest.mark.parametrize("check", analyzer_checks(LossProfile), ids=lambda c: c.__name__)
def test_a_plugin_with_declared_views_passes_the_conformance_suite(check):
    check()


def test_the_report_lays_out_a_plugins_views_as_they_are_declared(tmp_path, monkeypatch):
    """A plugin's 3-D view gets 3-D axes; its colour scale, read by its own limits_of, is one over
    the variants; its shared y range is one range: no edit to lossatlas."""
    from lossatlas import harness
    from lossatlas.report import write_report

    installed = Registry([EntryPoint(name="loss-profile", value="plugins.loss_profile:LossProfile", group=GROUP)])
    monkeypatch.setattr(registry_module, "default", lambda: installed)
    figures = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.setdefault(Path(path).name, figure) and [])
    config = {"name": "profile", "problem": "plugins.loss_profile:bowl", "variants": {"scale": [1.0, 3.0]},
              "seeds": [0], "minima": {"lr": 0.1, "momentum": 0.0, "epochs": 1, "steps_per_epoch": 20},
              "methods": {"loss-profile": {}}}
    with Store(tmp_path / "s.h5") as store:
        harness.execute(harness.plan(config, "smoke"), store, progress=False)
        write_report(store, tmp_path / "report", figures="draft")
    ribbons = figures["compare_loss-profile_ribbon"].axes
    assert [ax.name for ax in ribbons] == ["3d", "3d"]
    colours = [c for ax in ribbons for c in ax.collections]
    losses = np.concatenate([c.get_array() for c in colours])
    assert {(c.norm.vmin, c.norm.vmax) for c in colours} == {(losses.min(), losses.max())}  # one scale, both panels
    assert max(colours[0].get_array()) < losses.max()  # the gentler bowl drawn on the steeper one's scale
    profiles = figures["compare_loss-profile_profiles"].axes
    assert profiles[0].get_ylim() == profiles[1].get_ylim()
    variants = [figure for name, figure in figures.items() if name.startswith("variant_")]
    assert len(variants) == 2 and all(sorted(ax.name for ax in f.axes) == ["3d", "rectilinear"] for f in variants)


def test_an_older_drawer_asking_for_a_shared_colour_scale_still_defines_its_analyzer():
    """Drawers once declared ``shared = "colour"`` as an attribute, read from a "loss_grid" the
    composer knew; the plugin still loads, warned, with a colour scale of its own."""
    from lossatlas.analyzer import Analyzer

    def draw(ax, result):
        pass

    draw.shared = "colour"
    with pytest.warns(DeprecationWarning, match="limits_of"):
        cls = type("OldStyle", (Analyzer,), {"name": "old-style", "scope": "subject", "views": {"grid": draw}})
    assert cls.views["grid"].shared is None and cls.views["grid"].draw is draw


# -- figures a paper can use ---------------------------------------------------------------------------

def _grey(colour) -> bool:
    red, green, blue, _ = to_rgba(colour)
    return max(red, green, blue) - min(red, green, blue) < 0.02


def _plain_colours(ax) -> list:
    """The colours of the lines and of the markers and bars not coloured by a colour map."""
    colours = [line.get_color() for line in ax.lines]
    for collection in ax.collections:
        if collection.get_array() is None:
            colours += [tuple(c) for c in collection.get_facecolor()] + [tuple(c) for c in collection.get_edgecolor()]
    return colours + [patch.get_facecolor() for patch in ax.patches]


def test_every_view_of_every_installed_analyzer_labels_its_axes_with_units_in_okabe_ito_colours(results):
    """The report sets the loss's name and unit; every view of every analyzer labels both axes (and
    a 3-D view its three), every loss axis carries the unit, and every colour not read from a
    colour map is one of the Okabe-Ito colours, or a grey."""
    palette = {to_rgba(c) for c in plots.OKABE_ITO.values()}
    assert set(_INSTALLED) >= {"merge-tree", "loss-barcode", "minimum-bar", "jump-retrain", "hessian",
                               "hessian-layers", "interpolation", "sharpness"}
    with plots.style(), plots.losses_named("cross-entropy", "nats"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a 3-D tight-layout note
        for name in _INSTALLED:
            for view_name, declared in get(name).views.items():
                ax = _draw(declared, results[name])
                where = f"{name} view {view_name!r}"
                labels = [ax.get_xlabel(), ax.get_ylabel()] + ([ax.get_zlabel()] if ax.name == "3d" else [])
                assert all(label.strip() for label in labels) and ax.get_title(), (where, labels)
                for label in labels[:2] if ax.name != "3d" else []:
                    assert not label.startswith("loss") or "nats" in label, (where, label)
                for colour in _plain_colours(ax):
                    assert _grey(colour) or to_rgba(colour)[:3] in {c[:3] for c in palette}, (where, colour)
                plt.close(ax.figure)


def test_the_style_cycles_the_okabe_ito_colours_and_draws_surfaces_in_viridis():
    with plots.style():
        cycle = [to_rgba(c) for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert plt.rcParams["image.cmap"] == "viridis" and plt.rcParams["svg.fonttype"] == "none"
    assert set(cycle) == {to_rgba(c) for c in plots.OKABE_ITO.values()}
    assert cycle[:3] == [to_rgba(plots.OKABE_ITO[c]) for c in ("blue", "vermillion", "green")]  # no red/green pair


def test_the_loss_is_named_from_the_subjects_config():
    assert plots.loss_quantity({"kind": "module", "loss_fn": "CrossEntropyLoss()"}) == ("cross-entropy", "nats")
    assert plots.loss_quantity({"kind": "module", "loss_fn": "torch.nn.functional.nll_loss"})[1] == "nats"
    assert plots.loss_quantity({"kind": "module", "loss_fn": "MSELoss()", "problem": "pinn_convection"}) == \
        ("PINN MSE", None)
    assert plots.loss_quantity({"kind": "module", "loss_fn": "MSELoss()"})[0] == "MSE"
    assert plots.loss_quantity({"kind": "function"}) == ("f(θ)", None)
    assert plots.loss_quantity(None) == ("loss", None) == plots.loss_quantity({"loss_fn": "my_loss"})
    assert plots.loss_label() == "loss"  # outside a report: plain
    with plots.losses_named("cross-entropy", "nats"):
        assert plots.loss_label() == "loss (cross-entropy, nats)"
        assert plots.loss_label("birth") == "birth (cross-entropy, nats)"
        with plots.losses_named("f(θ)"):
            assert plots.loss_label() == "loss (f(θ))"
        assert plots.loss_label("death") == "death (cross-entropy, nats)"
    assert plots.loss_label("birth") == "birth (loss)"


def test_comparison_figures_fit_a_page_and_share_one_colour_bar(results):
    result = results["merge-tree"]
    one = plots.comparison_figure("c", CONTOUR, [("a", result)])
    assert one.get_figwidth() == pytest.approx(plots.COLUMN) and len(one.axes) == 2  # its own colour bar
    seven = [(f"v{i}", _with(result, loss_grid=result.arrays["loss_grid"] + i)) for i in range(7)]
    figure = plots.comparison_figure("c", CONTOUR, seven)
    panels = [ax for ax in figure.axes if getattr(ax, "_colorbar", None) is None]
    bars = [ax for ax in figure.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(panels) == 7 and len(bars) == 1  # one colour scale, said once
    assert bars[0]._colorbar.norm.vmax == pytest.approx(float(np.nanmax(seven[-1][1].arrays["loss_grid"])))
    assert figure.get_figwidth() == pytest.approx(plots.PAGE)
    spans = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in panels]
    assert max(row for row, _ in spans) == 1 and max(col for _, col in spans) == 3  # two rows of four
    assert [bool(ax.get_ylabel()) for ax in panels] == [True, False, False, False, True, False, False]
    assert all(ax.get_xlabel() for ax in panels)
    lines = get("interpolation").views["lines"]
    three = plots.comparison_figure("i", lines, [(f"v{i}", results["interpolation"]) for i in range(3)])
    assert not any(ax.get_legend() for ax in three.axes) and len(three.legends) == 1  # one legend, said once
    assert [t.get_text() for t in three.legends[0].get_texts()] == [
        line.get_label() for line in three.axes[0].lines if not line.get_label().startswith("_")]


def test_pages_split_many_panels_evenly():
    assert [len(page) for page in plots.pages(list(range(17)), 8)] == [6, 6, 5]
    assert [len(page) for page in plots.pages(list(range(45)))] == [12, 12, 12, 9]
    assert plots.pages(list(range(3))) == [[0, 1, 2]] and plots.pages([]) == [[]]


def test_save_figure_writes_vector_files_with_text_as_text(results, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "VECTOR_FORMATS", ("pdf", "svg"))
    with plots.style():
        png, pdf, svg = plots.save_figure(plots.panel_figure("v", _panels(results)[:1]), tmp_path / "f")
    assert png.suffix == ".png" and pdf.read_bytes().startswith(b"%PDF")
    text = svg.read_text()
    assert "<svg" in text and "minima, 3 saddles</text>" in text  # the title as text: searchable, editable


def _summary_study(n_measures: int, factor_levels, claimed: str):
    """A study-like object with what ``summary_figures`` reads: measures, an error, one claim."""
    from types import SimpleNamespace

    measures = [f"m.measure_{i:02d}" for i in range(n_measures)]
    claim = SimpleNamespace(metric=claimed, direction="increasing", factor=None)
    report = SimpleNamespace(error="test_error", claims=(claim,), claim_factor=lambda c: "width", names={})
    record = SimpleNamespace(name="grid", scale="smoke", report=report)
    means = [{"width": w, "depth": d, "measure": m, "mean": float(i + w), "ci_low": float(i + w) - 1,
              "ci_high": float(i + w) + 1} for i, m in enumerate(["test_error", *measures])
             for w in factor_levels for d in (2, 4)]
    study = SimpleNamespace(record=record, model_columns=["test_error"], measure_columns=measures,
                            variant_keys=["width", "depth"], display=lambda c: c)
    return study, means


def test_summary_figures_draw_multiplicative_levels_on_a_log_axis_and_split_many_measures():
    from lossatlas.report import log_levels, summary_figures

    assert log_levels([16, 64, 256]) and log_levels([1, 5, 10, 20, 30, 40, 50]) and log_levels([0.01, 0.1])
    assert not log_levels([16, 64]) and not log_levels([1, 2, 3]) and not log_levels([0, 1])
    assert not log_levels([-1, 10]) and not log_levels([2, 4, 8, 10])
    study, means = _summary_study(30, [16, 64, 256], claimed="m.measure_29")
    figures = summary_figures(study, means, "width")
    shown = [[ax for ax in f.axes if ax.get_visible()] for f in figures]
    assert [len(axes) for axes in shown] == [11, 11, 9]  # 31 panels, at most 12 a figure
    first = shown[0]
    assert [ax.get_ylabel().replace("\n", "") for ax in first[:2]] == ["test_error", "m.measure_29"]
    assert "↑" in first[1].get_title(loc="right")  # the claimed measure, second, marked
    assert all(ax.get_xscale() == "log" and ax.get_ylabel() for axes in shown for ax in axes)
    assert all(f.get_figwidth() <= plots.PAGE + 1e-9 for f in figures)
    legend = figures[0].legends[0]  # one line per level of the other variant key
    assert [t.get_text() for t in legend.get_texts()] == ["depth=2", "depth=4"]
    linear, _ = _summary_study(2, [16, 64], claimed="m.measure_00")
    (figure,) = summary_figures(linear, _summary_study(2, [16, 64], "m.measure_00")[1], "width")
    assert {ax.get_xscale() for ax in figure.axes if ax.get_visible()} == {"linear"}


def test_a_summary_with_nothing_to_draw_is_no_figure():
    from lossatlas.report import summary_figures

    study, means = _summary_study(0, [16, 64], claimed="m.none")
    study.model_columns = []  # no error recorded either
    assert summary_figures(study, means, "width") == []
    study.model_columns = ["test_error"]
    assert len(summary_figures(study, means, "width")) == 1  # the error alone still gets its panel
