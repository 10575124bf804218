"""Train the source-only baseline (no domain discriminator) on PACS with an ImageNet AlexNet.

    accelerate launch train_baseline.py --source photo --target art_painting
    accelerate launch train_baseline.py --train_on target --target art_painting   # upper bound

Flags: python train_baseline.py --help. Outputs: <output_dir>/results.json, model.safetensors.
"""
import sys

from dann.cli import main

if __name__ == "__main__":
    sys.exit(main("baseline"))
