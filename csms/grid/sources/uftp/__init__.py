"""UFTP (Shapeshifter) aggregator role: FlexRequests answered with FlexOffers from the fleet's real
flexibility, FlexOrders turned into limits in the limit book, FlexSettlements checked against our
meters. See docs/grid-interfaces.md."""
