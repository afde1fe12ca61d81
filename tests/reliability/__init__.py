"""Reliability: bad inputs, crashes and restarts, the gate under attack, serving under fuzz and load, and the
security rules. docs/reliability.md is the catalogue of every fault tried here and what the system did."""
