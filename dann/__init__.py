"""Unsupervised domain adaptation (DANN, CDAN, DSN) under one training loop, on Hugging Face Accelerate.

Plug-ins (registered in plugins.py): methods/ (what a step computes), backbones/ (G_f and G_y),
discriminators (G_d and gradient reversal), datasets/ (domains, classes, images). The rest:
config (flags), data (batches on the device), train (the loop), run (one run from flags),
checkpoint (save, resume, signals), tracking (W&B, figures), sweeps, runner, report,
homework and compare (experiments and tables), slurm and multinode (the experiments on a
Slurm cluster), downloads and errors (what the user sees).
"""
