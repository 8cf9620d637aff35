"""CSMS-initiated requests as OCPP 2.1 spells them."""

from __future__ import annotations

from csms.ocpp.v201.commands import V201Commands


class V21Commands(V201Commands):
    """The :class:`csms.ocpp.package.CommandSet` of OCPP 2.1: every typed request is spelt as in 2.0.1.
    Actions only 2.1 has (NotifyAllowedEnergyTransfer ...) go through ``Commands.call``, which checks
    them against the station's version."""
