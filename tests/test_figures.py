"""The report's figures: a claim's ``profile`` as a plot (mechcheck/report/figures.py)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mechcheck.report.figures import PROFILE_COLOURS, _profile_x, profile_figure
from mechcheck.report.results import ClaimResult


def probe_profile() -> list[dict]:
    """A probe's curve over six layers; layer 3's interval is one-sided (inf)."""
    return [{"site": f"blocks.{layer}.resid_post", "layer": layer, "task": task,
             "control": control, "selectivity": task - control,
             "ci_low": task - control - 0.05,
             "ci_high": math.inf if layer == 3 else task - control + 0.05, "chance": 0.5}
            for layer, task, control in [(0, 0.55, 0.52), (1, 0.71, 0.55), (2, 0.88, 0.58),
                                         (3, 0.93, 0.6), (4, 0.9, 0.61), (5, 0.84, 0.6)]]


def steering_profile() -> list[dict]:
    """A steering claim's dose-response over five scales, with random directions."""
    return [{"scale": scale, "shift": 0.4 * scale, "ci_low": 0.4 * scale - 0.3,
             "ci_high": 0.4 * scale + 0.3, "random_shift": 0.03 * scale}
            for scale in (0.0, 1.0, 2.0, 4.0, 8.0)]


def _result(profile: list[dict], *, id: str = "curve", verdict: str = "pass") -> ClaimResult:
    return ClaimResult(file="claims/test_p.yaml", id=id, model="m", verdict=verdict,
                       effect=0.3, profile=profile)


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _count(pixels: np.ndarray, colour: str, *, tolerance: int = 0) -> int:
    """How many pixels are ``colour`` (``#rrggbb``), each channel within tolerance."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb) <= tolerance).all(axis=-1).sum())


def _band_colour(colour: str, alpha: float = 0.18) -> str:
    """``colour`` at ``alpha`` over white, as the band is drawn."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 * (1 - alpha) + c * alpha):02x}" for c in rgb)


@pytest.mark.parametrize("profile", [probe_profile(), steering_profile()],
                         ids=["probe", "steering"])
def test_a_profile_draws_a_png_with_its_curve_and_band(profile: list[dict]) -> None:
    png = profile_figure(_result(profile))
    assert png.startswith(b"\x89PNG")
    pixels = _pixels(png)
    assert pixels.shape[0] > 250 and pixels.shape[1] > 500
    main = PROFILE_COLOURS["selectivity" if "selectivity" in profile[0] else "shift"]
    assert _count(pixels, main) > 200  # the main line, drawn thick
    assert _count(pixels, _band_colour(main), tolerance=2) > 5000  # its interval, shaded
    assert _count(pixels, PROFILE_COLOURS["random_shift"]) > 50  # control / random line


def test_the_same_profile_gives_the_same_bytes() -> None:
    for profile in (probe_profile(), steering_profile()):
        assert profile_figure(_result(profile)) == profile_figure(_result(profile))
    assert profile_figure(_result(probe_profile())) != \
        profile_figure(_result(probe_profile(), verdict="fail"))  # the title shows it


def test_x_is_the_layer_the_scale_or_the_index_named_by_site() -> None:
    assert _profile_x(probe_profile()) == ("layer", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [])
    assert _profile_x(steering_profile())[:2] == ("scale", [0.0, 1.0, 2.0, 4.0, 8.0])
    unlayered = [{"site": "embed", "layer": None, "task": 0.4},
                 {"site": "ln_$final$", "layer": None, "task": 0.6}]
    assert _profile_x(unlayered) == ("site", [0.0, 1.0], ["embed", r"ln_\$final\$"])
    one_layer = [{"site": "blocks.3.resid_mid", "layer": 3, "task": 0.5},
                 {"site": "blocks.3.resid_post", "layer": 3, "task": 0.6}]
    assert _profile_x(one_layer)[0] == "site"  # two sites of one layer: by index


def test_json_nones_and_odd_points_still_draw() -> None:
    """As read back from JSON: inf and NaN become None; a point may lack a value."""
    points = [{"site": "embed", "layer": None, "task": 0.4, "control": None,
               "selectivity": None, "ci_low": None, "ci_high": None, "chance": 0.33},
              {"site": "blocks.0.attn", "layer": None, "task": 0.6, "control": 0.4,
               "selectivity": 0.2, "ci_low": 0.15, "ci_high": None, "chance": 0.33},
              {"site": "ln_final", "layer": None, "task": 0.8, "note": "x"}]
    png = profile_figure(_result(points, id="odd $id$"))
    assert _pixels(png).shape[0] > 250


# -- 2-D profiles: causal tracing's layers x positions, one heatmap per site ------------------
def tracing_profile() -> list[dict]:
    """A tracing sweep: three sites x four layers x two positions; the MLP's effect peaks
    at layer 1 of the subject's last token, attention's at layer 3 of the last position."""
    peaks = {("mlp", "subject_last"): 1, ("attn", "last"): 3, ("resid", "subject_last"): 0}
    points = []
    for site in ("resid", "mlp", "attn"):
        for layer in range(4):
            for position in ("subject_last", "last"):
                peak = peaks.get((site, position))
                effect = 0.4 if peak == layer else 0.01
                points.append({"site": site, "layer": layer, "position": position,
                               "effect": effect, "ci_low": effect - 0.02,
                               "ci_high": effect + 0.02})
    return points


def test_a_grid_profile_is_told_apart_from_curves() -> None:
    from mechcheck.report.figures import is_grid

    assert is_grid(tracing_profile())
    assert not is_grid(probe_profile()) and not is_grid(steering_profile())
    assert not is_grid([{"site": "embed", "layer": None, "position": "last", "effect": 0.1}])
    assert not is_grid([])


def test_a_grid_profile_draws_one_heatmap_per_site_in_its_colours() -> None:
    from matplotlib import colormaps

    from mechcheck.report.figures import GRID_COLOURMAPS, grid_figure

    png = grid_figure(_result(tracing_profile(), id="heat"))
    assert png == grid_figure(_result(tracing_profile(), id="heat"))  # same bytes
    pixels = _pixels(png)
    assert pixels.shape[1] > 300
    for site in ("resid", "mlp", "attn"):  # each site's peak cell, at its map's top colour
        top = colormaps[GRID_COLOURMAPS[site]](1.0)
        colour = "#" + "".join(f"{round(255 * c):02x}" for c in top[:3])
        assert _count(pixels, colour, tolerance=3) > 300, site
    one_site = [p for p in tracing_profile() if p["site"] == "mlp"]
    assert _pixels(grid_figure(_result(one_site))).shape[0] < pixels.shape[0]  # one panel


def test_the_report_shows_a_grid_as_a_heatmap_and_a_table_and_curves_as_before(
        tmp_path: Path) -> None:
    from mechcheck.report.html import render

    grid = _result(tracing_profile(), id="heat")
    curve = _result(probe_profile(), id="probe")
    render([curve, grid], tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "| site | layer | subject_last | last |" in text
    assert "| mlp | 1 | 0.4 [0.38, 0.42] | 0.01 [-0.01, 0.03] |" in text
    files = tmp_path / "r_files"
    assert (files / "curve1.png").read_bytes() == profile_figure(curve)  # unchanged
    from mechcheck.report.figures import grid_figure

    assert (files / "curve2.png").read_bytes() == grid_figure(grid)
