"""What the grid does to stations: push TxProfiles (with hysteresis), install fail-safes, and
verify that stations and cars follow what they were told."""
