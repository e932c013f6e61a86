"""The converged-training reproduction of the papers' accuracy tables (docs/reproduction.md).

* :mod:`.plan`: the sweep matrix (network, width, baseline or p, seed) read from a JSON plan;
* :mod:`.runner`: runs it with ``golden.training.train``, one resumable run directory per cell;
* :mod:`.collect`: gathers finished and partial runs into one results file (JSON);
* :mod:`.table`: the markdown tables, the plots and the modelled speedups generated from that file.
"""
