"""Plain, slow references of every lindit layer, written from the papers' equations (tests only).

Nothing here imports lindit: tokens go to the grid by their row-major index, convolutions are explicit
loops over kernel taps, attention is the full N x M matrix, eta is computed per query. A reference reads a
layer's weights by their diffusers/lindit names from a ``Params`` (``Params.of(module)``), so a test copies
the module's weights across, runs both and compares outputs and the gradients of every parameter.

* ``ops``: grids, convolutions, norms, the two attention matrices.
* ``layers``: ConvFusion, Spatial Compressor, KV compression, LinFusion's MLP, Mix-FFN, self and joint
  attention, each a function of (Params, tokens, grid, description).
* ``methods``: what each registry method is according to its paper, as a description the layer
  references take.
"""
