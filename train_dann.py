"""Train DANN (Ganin & Lempitsky, 2015) on PACS with an ImageNet AlexNet.

    accelerate launch train_dann.py --source photo --target art_painting
    python train_dann.py --cpu --pretrained none --max_steps 5     # a quick check
    torchrun --nproc_per_node 2 train_dann.py --cpu ...            # two CPU processes

Flags: python train_dann.py --help. Outputs: <output_dir>/results.json, model.safetensors.
"""
import sys

from dann.cli import main

if __name__ == "__main__":
    sys.exit(main("dann"))
