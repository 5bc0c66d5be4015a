"""Look inside a trained run: rebuild it from its checkpoint (``loading``), receptive
fields, robustness to data variations, weight images, prediction galleries, attribution."""
