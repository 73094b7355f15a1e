"""Outputs of an analysis: results files, report, plots, terminal/notebook display."""
