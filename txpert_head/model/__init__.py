"""Stage 3, the model: :class:`~txpert_head.model.txpert.TxPert` (basal encoder, latent shift, decoder), the
effect codes of conditions, and the receptive field of a set of perturbed genes in the graph.

* :mod:`.txpert` -- the ``nn.Module``;
* :mod:`.effects` -- the observed training effects used as node inputs (codes, masks);
* :mod:`.receptive` -- the k-hop receptive field (the part of the graph a batch's encoder output depends on).
"""
