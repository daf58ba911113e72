"""A code location built when the workspace loads it, from the environment of that moment
(INTELLIGENCE_UNIVERSE, INTELLIGENCE_ARTIFACT_ROOT) and the model families' code as it is then:
what a reload of `make ui`'s location does, in process, for tests that ask Dagster's GraphQL API."""

import dagster as dg

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_definitions
from intelligence_assets.defs.resources.deployment import Deployment


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_universe(), Deployment.from_environment())
