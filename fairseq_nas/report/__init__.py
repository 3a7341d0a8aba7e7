"""Plots and run reports (matplotlib with the Agg backend; no torch or fairseq import)."""
