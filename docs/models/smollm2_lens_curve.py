"""The logit lens's layer curve on SmolLM2-135M (docs/lens-curve.png), through mechcheck's
public API and the report's own profile figure.

Run from the repository root::

    python docs/models/smollm2_lens_curve.py

It evaluates ``claims/smollm2/test_lens.yaml`` (about half a minute on two CPU cores)
and draws the profile of its claim ``fact_decodable_from_layer_23``: the lens's logit
difference between the answer and the wrong answer at the last token, at every layer
(its ``curve: "*"``), as the HTML report draws it.
"""

from __future__ import annotations

from pathlib import Path

import mechcheck
from mechcheck.report.figures import profile_figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLAIMS = ROOT / "claims" / "smollm2" / "test_lens.yaml"
CLAIM = "fact_decodable_from_layer_23"
OUT = ROOT / "docs" / "lens-curve.png"


def main() -> None:
    results = {r.id: r for r in mechcheck.evaluate_path(CLAIMS)}
    result = results[CLAIM]
    if not result.profile:
        raise SystemExit(f"{CLAIM}: {result.verdict}: {result.message}")
    OUT.write_bytes(profile_figure(result))
    for point in result.profile:
        print(f"{point['site']:>22}  {point['score']:8.3f}  "
              f"[{point['ci_low']:.3f}, {point['ci_high']:.3f}]")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
