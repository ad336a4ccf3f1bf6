"""One parser per public source: each turns the provider's files into an edge table plus provenance.

Every module exposes ``build(...) -> (EdgeTable, layer_meta)``; the command line (``kgbuild.cli``) finds the
inputs (given paths or :func:`kgbuild.fetch.fetch`), calls it and writes the multigraph file.
"""
