"""Direct effects per layer on SmolLM2-135M's facts (docs/direct-effect-curve.png),
through mechcheck's public API and the report's own profile figure.

Run from the repository root::

    python docs/models/smollm2_direct_curve.py

It evaluates ``claims/smollm2/test_direct_effect.yaml`` (about half a minute on two CPU
cores) and draws the profile of its claim ``attn_23_writes_the_fact``: the direct effect
on the logit difference answer - wrong at the last token of every attention layer and
every MLP (its ``curve``), in forward-pass order, as the HTML report draws it.
"""

from __future__ import annotations

from pathlib import Path

import mechcheck
from mechcheck.report.figures import profile_figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLAIMS = ROOT / "claims" / "smollm2" / "test_direct_effect.yaml"
CLAIM = "attn_23_writes_the_fact"
OUT = ROOT / "docs" / "direct-effect-curve.png"


def main() -> None:
    results = {r.id: r for r in mechcheck.evaluate_path(CLAIMS)}
    result = results[CLAIM]
    if not result.profile:
        raise SystemExit(f"{CLAIM}: {result.verdict}: {result.message}")
    OUT.write_bytes(profile_figure(result))
    for point in result.profile:
        print(f"{point['site']:>16}  {point['direct_effect']:8.3f}  "
              f"[{point['ci_low']:.3f}, {point['ci_high']:.3f}]")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
