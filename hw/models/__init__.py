"""Analytic models of the accelerator, derived from the program independently of the gateware: cycles and
activity (checked against the RTL's counters), the SCALE-Sim comparison, the energy table."""
