"""End to end: both shipped benchmarks at smoke scale, the report files, and their rebuild from the store."""
import csv
import json
import math
import re
import statistics
import warnings
from pathlib import Path

import h5py
import pytest

from lossatlas.cli import main

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
NAMES = ("resnet_skip", "pinn_convection")
TEXT_FILES = ("metrics.csv", "comparison.csv", "variants.csv", "agreement.csv", "table.md", "table.tex", "report.md",
              "index.html")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    configs = [str(BENCHMARKS / f"{name}.toml") for name in NAMES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PHATE and graphtools warn about tiny smoke-scale graphs
        assert main(["run", *configs, "--scale", "smoke", "--out", str(out), "--figures", "draft"]) == 0
    return out


def _rows(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", NAMES)
def test_every_report_file_is_written(smoke, name):
    folder = smoke / f"{name}_smoke"
    for filename in (*TEXT_FILES, "run.log"):
        assert (folder / filename).stat().st_size > 0, filename
    rows = _rows(folder)
    variants = sorted({row["subject"] for row in rows})
    assert len(rows) == 2 * len(variants) == 4  # 2 variants x 2 seeds at smoke scale
    figures = {p.name for p in (folder / "figures").iterdir()}
    for stem in [f"variant_{'skip' if name == 'resnet_skip' else 'beta'}" , "compare_merge-tree_contour",
                 "compare_merge-tree-hessian_surface", "compare_loss-barcode_barcode", "compare_jump-retrain_phate",
                 "compare_hessian_density"]:
        assert any(f.startswith(stem) and f.endswith(".png") for f in figures), stem
    assert not any(f.endswith(".pdf") for f in figures)  # draft figures: PNG only
    html = (folder / "index.html").read_text()
    assert all(f'src="{png}"' in html for png in (f"figures/{f}" for f in figures if f.endswith(".png")))
    assert ".pdf" not in html  # no links to PDFs that were not drawn
    report = (folder / "report.md").read_text()
    assert all(line in report for line in (folder / "table.md").read_text().splitlines() if line.startswith("| "))
    log = (folder / "run.log").read_text()
    assert "start" in log and "done" in log and "report ->" in log


@pytest.mark.parametrize("name", NAMES)
def test_every_metric_is_finite_or_explained(smoke, name):
    folder = smoke / f"{name}_smoke"
    rows = _rows(folder)
    report = (folder / "report.md").read_text()
    explained = report.split("\n## Non-finite values", 1)[1].split("\n## ", 1)[0]
    metric_columns = [c for c in rows[0] if "." in c and not c.startswith("time.")]
    assert {c.split(".")[0] for c in metric_columns} == {"merge-tree", "merge-tree-hessian", "loss-barcode",
                                                         "jump-retrain", "hessian", "hessian-layers",
                                                         "interpolation", "sharpness"} | (
        {"merge-tree-3d"} if name == "resnet_skip" else set())  # the merge tree on a 3-D grid too
    for row in rows:
        for column in metric_columns + ["train_loss"]:
            value = float(row[column])
            if not math.isfinite(value):
                assert f"seed {row['seed']}: `{column}`" in explained, (column, row["subject"])


@pytest.mark.parametrize("name", NAMES)
def test_report_rebuilds_the_same_tables_from_the_store(smoke, name, tmp_path):
    folder = smoke / f"{name}_smoke"
    assert main(["report", str(smoke / f"{name}_smoke.h5"), "--out", str(tmp_path), "--figures", "none"]) == 0
    for filename in TEXT_FILES + (("sensitivity.csv",) if name == "resnet_skip" else ()):
        rebuilt, first = ((f / filename).read_text(encoding="utf-8") for f in (tmp_path, folder))
        if filename in ("report.md", "index.html"):  # the same up to the list of figures (not drawn here)
            figures = "\n## Figures" if filename == "report.md" else "<h2>Figures</h2>"
            rebuilt, first = rebuilt.split(figures)[0], first.split(figures)[0]
            assert len(first) > 1000
        assert rebuilt == first, filename


def test_variant_table_is_the_mean_and_std_of_the_rows(smoke):
    """The per-variant cells are recomputed here from metrics.csv with the standard library."""
    folder = smoke / "pinn_convection_smoke"
    rows = _rows(folder)
    table = (folder / "table.md").read_text().split("### ", 2)[1]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for column in ("train_loss", "hessian.top_eigenvalue", "merge-tree.n_saddles"):
        cells = next([c.strip() for c in line.strip("|").split("|")] for line in lines
                     if line.startswith(f"| {column} "))
        for variant, cell in zip(header[1:], cells[1:]):
            beta = float(variant.split("=")[1])
            values = [float(r[column]) for r in rows if float(r["beta"]) == beta]
            mean, std = re.match(r"(\S+) ± (\S+)", cell).groups()
            assert float(mean) == pytest.approx(statistics.mean(values), rel=1e-3, abs=1e-12)
            assert float(std) == pytest.approx(statistics.stdev(values), rel=0.06, abs=1e-12)  # 2 significant digits


def test_comparison_table_names_the_factor_error_and_claims(smoke):
    resnet = (smoke / "resnet_skip_smoke" / "table.md").read_text()
    assert "| vs test_error | vs skip | Cliff's δ (skip) |" in resnet
    pinn = (smoke / "pinn_convection_smoke" / "table.md").read_text()
    assert "| vs test_relative_l2_error | vs beta |" in pinn
    report = (smoke / "resnet_skip_smoke" / "report.md").read_text()
    claims = report.split("\n## Paper claims", 1)[1].split("\n## ", 1)[0]
    cited = claims.count("Xie, Geniesse et al. 2024") + claims.count("Barannikov et al. 2025")
    assert cited >= 8 and "seed 00" not in claims  # papers by author and year, not as "seed 001"
    assert "not testable at this scale (depth has one level)" in claims  # depth is not varied at smoke scale
    tex = (smoke / "resnet_skip_smoke" / "table.tex").read_text()
    assert "\\toprule" in tex and "\\pm" in tex and "_" not in tex.replace("\\_", "")


@pytest.mark.parametrize("name", NAMES)
def test_comparison_and_agreement_files_cover_the_measures(smoke, name):
    folder = smoke / f"{name}_smoke"
    with open(folder / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for column in ("measure", "against", "n", "kendall_tau", "spearman_rho", "p_value", "p_adjusted", "ci_low",
                   "ci_high"):
        assert column in rows[0], column
    measures = {r["measure"] for r in rows}
    assert "hessian.top_eigenvalue" in measures and "hessian.hvp_count" not in measures  # diagnostics stay out
    assert len(rows) == 2 * len(measures)  # against the error and the one factor
    tested = [r for r in rows if r["p_adjusted"]]  # the landscape measures' tests: one adjusted family
    assert tested and all(float(r["p_adjusted"]) >= float(r["p_value"]) for r in tested)
    assert all("." in r["measure"] for r in tested)  # the model's own columns (train_loss, ...) are not in it
    assert any(r["p_value"] and not r["p_adjusted"] for r in rows if r["measure"] == "train_loss")
    with open(folder / "agreement.csv", newline="") as handle:
        matrix = list(csv.reader(handle))
    assert matrix[0][1:] == [row[0] for row in matrix[1:]]  # square, one name per row and column
    assert all(float(row[i + 1]) == 1.0 for i, row in enumerate(matrix[1:]))
    assert any(f.startswith("agreement_minima") for f in (p.name for p in (folder / "figures").iterdir()))
    report = (folder / "report.md").read_text()
    assert "## How to read the comparison" in report and "## Agreement between methods" in report


def test_sensitivity_reruns_merge_trees_at_other_direction_seeds(smoke):
    folder = smoke / "resnet_skip_smoke"
    with open(folder / "sensitivity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["setting"] for r in rows} == {"base", "seed=1", "representation=image"}
    assert {r["measure"].split(".")[0] for r in rows} == {"merge-tree"}
    base = {(r["measure"], r["against"]): r["kendall_tau"] for r in rows if r["setting"] == "base"}
    with open(folder / "comparison.csv", newline="") as handle:
        compared = {(r["measure"], r["against"]): r for r in csv.DictReader(handle)}
    for key, tau in base.items():  # the base setting is the comparison's own result
        assert compared[key]["kendall_tau"] == tau and compared[key]["stable"] in ("yes", "no")
    assert "## Sensitivity to nuisance choices" in (folder / "report.md").read_text()
    assert (folder / "figures" / "sensitivity.png").is_file()


def test_rerun_reuses_the_store(smoke, capsys):
    store = smoke / "pinn_convection_smoke.h5"
    with h5py.File(store, "r") as file:
        before = {name: file[name].attrs["created"] for name in _result_nodes(file)}
    assert main(["run", str(BENCHMARKS / "pinn_convection.toml"), "--scale", "smoke", "--out", str(smoke),
                 "--figures", "draft"]) == 0
    with h5py.File(store, "r") as file:
        after = {name: file[name].attrs["created"] for name in _result_nodes(file)}
    assert before == after and len(before) == 2 * 2 * 7 + 2  # 7 per-minimum methods, 1 barcode per variant


def _result_nodes(file) -> list[str]:
    found = []
    file.visititems(lambda name, obj: found.append(name) if obj.attrs.get("encoding-type") == "result" else None)
    return found


STUDIES = ("barcode_lowering", "barcode_lowering_cnn", "lr_schedule", "generalization_grid")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The small-network benchmarks at smoke scale, tables only (the figures are tested above)."""
    out = tmp_path_factory.mktemp("studies")
    configs = [str(BENCHMARKS / f"{name}.toml") for name in STUDIES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", *configs, "--scale", "smoke", "--out", str(out), "--figures", "none"]) == 0
    return out


@pytest.mark.parametrize("name", STUDIES)
def test_studies_run_every_method_and_cite_their_claims(studies, name):
    folder = studies / f"{name}_smoke"
    rows = _rows(folder)
    assert len(rows) == 2 * len({row["subject"] for row in rows})  # 2 seeds per variant at smoke scale
    report = (folder / "report.md").read_text()
    explained = report.split("\n## Non-finite values", 1)[1].split("\n## ", 1)[0]
    labels = {c.split(".")[0] for c in rows[0] if "." in c and not c.startswith("time.")}
    assert {"loss-barcode", "minimum-bar", "merge-tree", "jump-retrain", "hessian", "interpolation",
            "sharpness"} <= labels
    for row in rows:
        for column in (c for c in row if "." in c and not c.startswith("time.")):
            if not math.isfinite(float(row[column])):
                assert f"seed {row['seed']}: `{column}`" in explained, (column, row["subject"])
    claims = report.split("\n## Paper claims", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"(Barannikov|Li|Jiang|Neyshabur|Jastrzebski) et al\. 20\d\d", claims)


def test_each_minimum_bar_is_its_place_in_the_barcode(studies):
    """The lowest minimum of each network has no finite bar; the other's bar is the barcode's."""
    rows = _rows(studies / "barcode_lowering_smoke")
    for subject in {row["subject"] for row in rows}:
        mine = sorted((r for r in rows if r["subject"] == subject), key=lambda r: float(r["minimum-bar.rank"]))
        assert math.isnan(float(mine[0]["minimum-bar.bar"]))
        assert float(mine[1]["minimum-bar.bar"]) == pytest.approx(float(mine[1]["loss-barcode.max_bar"]), rel=1e-9)
        assert float(mine[1]["minimum-bar.saddle"]) == pytest.approx(float(mine[1]["loss-barcode.max_saddle"]),
                                                                      rel=1e-9)


def test_learning_rate_levels_train_their_own_minima(studies):
    rows = _rows(studies / "lr_schedule_smoke")
    levels = {row["lr"]: row["subject"] for row in rows}
    assert set(levels) == {"0.004", "0.04"}
    assert levels["0.004"].endswith("_lr0.004") and "_schedulemultistep" in levels["0.04"]
    with h5py.File(studies / "lr_schedule_smoke.h5", "r") as file:
        recipe = json.loads(file[f"subjects/{levels['0.04']}/minima/000"].attrs["recipe"])
    assert (recipe["lr"], recipe["gamma"], recipe["schedule"], recipe["milestones"]) == (0.04, 0.1, "multistep", [1])


def test_generalization_grid_ranks_the_measures_by_granulated_tau(studies):
    folder = studies / "generalization_grid_smoke"
    rows = _rows(folder)
    for row in rows:
        assert float(row["generalization_gap"]) == pytest.approx(float(row["train_accuracy"]) -
                                                                 float(row["test_accuracy"]))
    report = (folder / "report.md").read_text()
    assert report.index("## Which measure tracks generalization_gap") < report.index("## Method comparison")
    assert report.index("## Method comparison") < report.index("## Robustness across environments")  # Dziugaite
    with open(folder / "robustness.csv", newline="") as handle:  # et al. 2020: one row per measure, ranked
        assert len(list(csv.DictReader(handle))) >= 10
    table = report.split("## Which measure tracks generalization_gap", 1)[1].split("\n## ", 1)[0]
    taus = [abs(float(line.split("|")[3].split()[0])) for line in table.splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert len(taus) >= 10 and taus == sorted(taus, reverse=True)
