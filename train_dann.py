"""Train with unsupervised domain adaptation: DANN (Ganin & Lempitsky, 2015), CDAN or DSN.

    accelerate launch --config_file accelerate_config.yaml train_dann.py      # DANN, PACS photo -> art_painting
    accelerate launch train_dann.py --method cdan --backbone resnet50 --discriminator paper
    python train_dann.py --dataset digits_shipped --backbone lenet --pretrained none   # CPU, no download
    torchrun --nproc_per_node 2 train_dann.py --cpu ...                      # two CPU processes

Flags: python train_dann.py --help. Outputs: <output_dir>/results.json, model.safetensors, figures.
"""
import sys

from dann.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("dann"))
