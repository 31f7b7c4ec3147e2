# An intervention that raises during the patched run, for the "Errors while measuring"
# example of docs/failure-messages.md.
import mechcheck
from mechcheck.interventions import Intervention


def _explode(current, source):
    raise RuntimeError("this intervention always fails")


@mechcheck.hookimpl
def mechcheck_interventions() -> list[Intervention]:
    return [Intervention(name="explode", base_run="clean", source=None, replace=_explode,
                         description="explode")]
