"""--first_look's recipes: the source-only baseline and --method side by side on the shipped real
digits, on a CPU in about a minute, with the recipes of the CPU benchmark (sweeps/tables/digits.yaml,
docs/RESULTS.md; tests/test_sweeps.py checks that the two agree). dann.run.first_look trains them.

Plain data: the flag parser reads it to set --first_look's defaults, without loading torch. The
backbone flags of a method's recipe (the bottleneck of dann, cdan and mcc) are also that method's
defaults on the first look's backbone, lenet_bn (dann/config.py: recipe_defaults).
"""
from __future__ import annotations

# The benchmark's first pair and the flags every one of its runs shares.
DATA = {"dataset": "digits_shipped", "source": "mnist", "target": "mnist_m", "backbone": "lenet_bn"}
COMMON = {"pretrained": "none", "batch_size": 64, "lr": 0.01, "lr_schedule": "dann", "iters_per_epoch": 50,
          "epochs": 10, "eval_every": 10, "channels_last": "on", "tsne": False, "source_val": 0,
          "select_rules": "none"}
# Each method's recipe: the table's first row of that method, its chosen recipe: the reference
# optimizer (TLlib's digits examples) for every method; DANN's reversal for the adversarial ones;
# TLlib's 256-wide bottleneck (Linear-BatchNorm-ReLU after G_f, a linear G_y) for DANN, CDAN and MCC.
REFERENCE_OPTIMIZER = {"lr_schedule": "inv", "nesterov": True, "weight_decay": 0.001}
REVERSAL = {"alpha": 1.0, "alpha_schedule": "warm_start", "alpha_warmup_steps": 1000, "discriminator": "bn_mlp",
            "discriminator_width": 1024, "domain_loss_reduction": "mean", "domain_batches": "separate"}
BOTTLENECK = {"bottleneck_dim": 256}
RECIPES = {
    "baseline": REFERENCE_OPTIMIZER,
    "adabn": REFERENCE_OPTIMIZER,
    "dann": {**REFERENCE_OPTIMIZER, **REVERSAL, "classify_target": True, **BOTTLENECK},
    "cdan": {**REFERENCE_OPTIMIZER, **REVERSAL, "entropy_conditioning": False, **BOTTLENECK},
    "dsn": {**REFERENCE_OPTIMIZER, **REVERSAL, "dsn_similarity": 1.0, "dsn_decoder_width": 32},
    "mcc": {**REFERENCE_OPTIMIZER, "mcc_weight": 1.0, "mcc_temperature": 2.5, "domain_batches": "separate",
            **BOTTLENECK},
    "pseudo_labels": {**REFERENCE_OPTIMIZER, "pl_threshold": 0.9, "pl_weight": 1.0},
}


def recipe(method: str) -> dict:
    """--first_look's defaults for `method`: the data, the shared flags and the method's own."""
    if method not in RECIPES:
        raise SystemExit(f"error: --first_look has no recipe for --method {method}; "
                         f"choose one of {', '.join(m for m in RECIPES if m != 'baseline')}")
    return {**DATA, **COMMON, "method": method, **RECIPES[method]}
