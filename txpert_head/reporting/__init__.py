"""Stage 7, reporting: plots and the HTML/markdown report of a run or of the demo.

* :mod:`.plots` -- learning curves, model against baseline, predicted against true Δ, the demo's figures;
* :mod:`.report` -- the report file.
"""
