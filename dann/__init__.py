"""DANN on PACS: domain-adversarial training of an ImageNet AlexNet, on Hugging Face Accelerate.

Modules: config (flags), pacs (files, download, decode cache), data (batches on the device),
model (G_f, G_y, G_d and gradient reversal), schedules, train (the shared loop), checkpoint
(save, resume, signals), tracking (W&B, figures), sweeps and report (experiments).
"""
