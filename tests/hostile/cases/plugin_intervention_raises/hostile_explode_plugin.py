"""A plugin intervention with a bug: it raises inside the patched run."""

import mechcheck
from mechcheck.interventions import Intervention


def _explode(current, source):
    raise RuntimeError("the explode intervention failed")


@mechcheck.hookimpl
def mechcheck_interventions():
    return [Intervention(name="explode", base_run="clean", source=None, replace=_explode,
                         description="explode")]
