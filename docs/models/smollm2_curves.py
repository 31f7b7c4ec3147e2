"""Two of the report's curves on SmolLM2-135M's facts, through mechcheck's public API and
the report's own profile figure:

- docs/lens-curve.png: ``claims/smollm2/test_lens.yaml``'s claim
  ``fact_decodable_from_layer_23``, the logit lens's logit difference between the answer
  and the wrong answer at the last token, at every layer (its ``curve: "*"``);
- docs/direct-effect-curve.png: ``claims/smollm2/test_direct_effect.yaml``'s claim
  ``attn_23_writes_the_fact``, the direct effect on that logit difference of every
  attention layer and every MLP (its ``curve``), in forward-pass order.

Run from the repository root (about half a minute per file on two CPU cores)::

    python docs/models/smollm2_curves.py            # both
    python docs/models/smollm2_curves.py lens       # or direct
"""

from __future__ import annotations

import sys
from pathlib import Path

import mechcheck
from mechcheck.report.figures import profile_figure

ROOT = Path(__file__).resolve().parents[2]
# name -> (claim file, claim, picture, the profile's value key)
CURVES = {
    "lens": ("test_lens.yaml", "fact_decodable_from_layer_23", "lens-curve.png", "score"),
    "direct": ("test_direct_effect.yaml", "attn_23_writes_the_fact",
               "direct-effect-curve.png", "direct_effect"),
}


def draw(name: str) -> None:
    claims, claim, picture, value = CURVES[name]
    results = {r.id: r for r in mechcheck.evaluate_path(ROOT / "claims" / "smollm2" / claims)}
    result = results[claim]
    if not result.profile:
        raise SystemExit(f"{claim}: {result.verdict}: {result.message}")
    out = ROOT / "docs" / picture
    out.write_bytes(profile_figure(result))
    for point in result.profile:
        print(f"{point['site']:>22}  {point[value]:8.3f}  "
              f"[{point['ci_low']:.3f}, {point['ci_high']:.3f}]")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(CURVES):
        draw(name)
