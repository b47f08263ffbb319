"""Reading a sweep after (or while) it runs, kept apart from running it (DESIGN §2): here the
report's context (group sizes, bounds, stage-1 metrics), the allocation map and the front plot.

Importing the package imports nothing heavy; the plotting modules import matplotlib (never pyplot)
only when they draw.
"""
