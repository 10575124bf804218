"""Unsupervised domain adaptation (DANN and the methods compared with it) under one training
loop, on Hugging Face Accelerate.

Plug-ins (registered in plugins.py): methods/ (what a step computes), backbones/ (G_f and G_y),
discriminators (G_d and gradient reversal), datasets/ (domains, classes, images). The rest:
config (flags), data (batches on the device), train (the loop), run (one run from flags),
checkpoint (save, resume, signals), selection (scores without target labels), tracking (W&B,
TensorBoard), figures, progress (bars or lines), downloads and errors (what the user sees). experiments/ is the tier above: grids,
runners, tables, reports; the library never imports it.
"""
