"""OpenADR 3 counterparts: a VTN stand-in (the DSO's server) and the GAC profile it serves."""

from simulators.openadr.gac import (
    capacity_limit_event,
    event_problems,
    gac_program,
    gac_targets,
    make_ean18,
    program_problems,
    safe_mode_event,
)
from simulators.openadr.vtn import ClientCredentials, Delivery, Vtn, VtnConfig

__all__ = ["ClientCredentials", "Delivery", "Vtn", "VtnConfig", "capacity_limit_event", "event_problems",
           "gac_program", "gac_targets", "make_ean18", "program_problems", "safe_mode_event"]
