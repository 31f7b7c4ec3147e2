"""A claim kind that takes a minute: it marks that it started, then sleeps."""

import time
from pathlib import Path

import mechcheck
from mechcheck.engine import Needs
from mechcheck.spec.schema import KeySpec, as_components


class Sleepy:
    name = "sleepy"
    description = "sleeps for a minute"
    keys = {"components": KeySpec(name="components", required=True, parse=as_components,
                                  expected="addresses")}

    def needs(self, claim, ctx):
        return Needs()

    def measure(self, claim, ctx):
        Path("sigint.started").touch()
        time.sleep(60)
        raise AssertionError("the run should have been interrupted")


@mechcheck.hookimpl
def mechcheck_claim_kinds():
    return [Sleepy()]
