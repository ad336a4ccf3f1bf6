"""One parser per public source: each turns the provider's files into an edge table plus provenance.

Stages: ``read(...) -> (EdgeTable, layer_meta)`` parses (``string``, ``edges``; ``screen.read`` also runs the
FAISS search and returns the candidate pairs); the builders of :mod:`kgbuild.api` apply the filters of
:mod:`kgbuild.filters` and make the layer. ``build(...)`` (``string``, ``edges``, ``go``, ``reactome``) is
parse + filters, returning the filtered table; GO and Reactome filter inside their blockwise Jaccard
computation (:mod:`kgbuild.jaccard`) so memory stays proportional to the kept edges. The command line
(``kgbuild.cli``) calls :mod:`kgbuild.api`, which finds the inputs (given paths or
:func:`kgbuild.fetch.fetch`) and writes the multigraph file.
"""
