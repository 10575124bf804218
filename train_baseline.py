"""Train the source-only baseline (no domain discriminator), or the trained-on-target upper bound.

    accelerate launch --config_file accelerate_config.yaml train_baseline.py
    accelerate launch train_baseline.py --train_on target --target art_painting   # upper bound

Flags: python train_baseline.py --help. Outputs: <output_dir>/results.json, model.safetensors, figures.
"""
import sys

from dann.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("baseline"))
