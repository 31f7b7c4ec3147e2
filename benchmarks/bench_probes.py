"""What a sweep of probes costs: all 30 layers of SmolLM2-135M from one shared run.

A probe claim with ``curve: ["blocks.*.resid_post"]`` reads every layer's activations
from the file's one shared clean run (recorded once for all sites), then fits a probe
per site.  The baseline is what a notebook loop does: one forward pass per layer,
recording that layer, then the same fitting.  In one process it prints

- the shared run (recording all 30 sites) over one plain forward pass,
- the fitting per site over one plain forward pass,
- the whole sweep (mechcheck's claim) over the baseline loop,

as ratios, and writes the claim's JSON report (``--report``), from which
docs/probes.md's curve is drawn (``--figure``).

    python benchmarks/bench_probes.py                       # ~3 minutes on 2 cores
    python benchmarks/bench_probes.py --report probes-report.json --figure docs/probes-curve.png
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

from mechcheck.addresses import Address
from mechcheck.api import evaluate_path
from mechcheck.session import Session
from mechcheck.spec.loader import load_claim_file

CLAIMS = """\
model: zoo:smollm2-135m
task: {name: ioi, n: 60, seed: 0, templates: [0, 2, 6]}
metric: logit_diff
claims:
  - id: io_order_curve
    kind: probe
    components: ["blocks.20.resid_post"]
    at: END
    label: order
    control: shuffled
    seeds: 1
    min_selectivity: 0.3
    curve: ["blocks.*.resid_post"]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="write the claim's JSON report here")
    parser.add_argument("--figure", type=Path, help="write the curve's PNG here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    path = folder / "test_curve.yaml"
    path.write_text(textwrap.dedent(CLAIMS))

    session = Session()
    spec = list(load_claim_file(path, session.registry.kind_keys(),
                                common=session.registry.common_keys()).claims)[0]
    runner = session.runner(spec)
    runner.run("clean")  # load, convert, warm up
    layers = runner.loaded.adapter.dims.n_layers
    start = time.perf_counter()
    runner.run("clean")
    plain = time.perf_counter() - start

    sites = [Address("resid_post", layer) for layer in range(layers)]
    start = time.perf_counter()
    runner.run("clean", record=sites)
    shared = time.perf_counter() - start
    start = time.perf_counter()
    for site in sites:
        runner.run("clean", record=[site])
    loop_forwards = time.perf_counter() - start

    start = time.perf_counter()
    (result,) = evaluate_path(path, session=session)
    sweep = time.perf_counter() - start
    fitting = result.duration_s
    per_site_fit = fitting / (layers + 1)
    baseline = loop_forwards + fitting
    print(f"SmolLM2-135M, {len(runner.dataset)} IOI prompts, {layers} layers, one seed")
    print("  plain forward pass                         1.00")
    print(f"  shared run recording all {layers} sites        {shared / plain:6.2f}")
    print(f"  baseline: one forward per layer            {loop_forwards / plain:6.2f}")
    print(f"  probe fitting per site (probe + control)   {per_site_fit / plain:6.2f}")
    print(f"  whole sweep: mechcheck / baseline loop     {sweep / baseline:6.2f}")
    print(f"  verdict {result.verdict}, selectivity {result.effect:.3f} at layer 20")
    if args.report:
        from mechcheck.report.io import write_report

        write_report([result], args.report)
    if args.figure:
        from mechcheck.report.figures import profile_figure

        args.figure.write_bytes(profile_figure(result))


if __name__ == "__main__":
    main()
