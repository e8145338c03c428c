"""What runs leave behind: tables, metrics.json, figures, sweep summaries.

Figures are returned as matplotlib ``Figure`` objects and written by ``report``; nothing
here switches matplotlib's backend (the command line chooses Agg).
"""
