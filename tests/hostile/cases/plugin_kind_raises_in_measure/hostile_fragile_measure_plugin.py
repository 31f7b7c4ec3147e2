"""A plugin claim kind with a bug in measure."""

import mechcheck
from mechcheck.spec.schema import KeySpec, as_components


class Fragile:
    name = "fragile"
    description = "raises in measure"
    keys = {"components": KeySpec(name="components", required=True, parse=as_components,
                                   expected="addresses")}

    def needs(self, claim, ctx):
        pass
        return ctx.pattern_needs(claim) if False else __import__("mechcheck.engine").engine.Needs()

    def measure(self, claim, ctx):
        raise KeyError("fragile_lookup")
        raise AssertionError("unreachable")


@mechcheck.hookimpl
def mechcheck_claim_kinds():
    return [Fragile()]
