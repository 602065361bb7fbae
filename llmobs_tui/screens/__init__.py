"""The screens: overview, breakdown, traces, trace, alerts, help."""
