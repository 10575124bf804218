"""One training run on several Slurm nodes: an sbatch script that starts, under srun, one
`accelerate launch` per node (--machine_rank $SLURM_NODEID; the first node is the rendezvous),
each starting a process per GPU. Before the time limit Slurm signals the script, every process
checkpoints, the job requeues itself and the requeued job resumes (--resume=auto).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from dann.experiments.slurm import SIGNAL_DELAY_S, SlurmSettings

ROOT = Path(__file__).resolve().parents[2]  # the checkout: sweeps/, train_dann.py
# @NAME@ fields are filled in; everything else is bash as sbatch runs it.
TEMPLATE = r"""#!/bin/bash
# One training run on @NODES@ nodes x @GPUS@ GPUs: `sbatch @SCRIPT@`
# (written by `python sweep.py multinode`; edit TRAIN to change the run).
#SBATCH --job-name=dann-multinode
#SBATCH --nodes=@NODES@
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=@GPUS@
#SBATCH --cpus-per-task=@CPUS@
#SBATCH --time=@TIME@
#SBATCH --signal=B:USR1@@DELAY@
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --chdir=@WORKDIR@
#SBATCH --output=@RUN_DIR@/slurm-%j.out
@OPTIONS@
set -u
PYTHON=@PYTHON@
TRAIN=(@TRAIN@)
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=$((20000 + SLURM_JOB_ID % 20000))  # two jobs on one node get two ports
export PYTHON MAIN_IP MAIN_PORT

# Slurm's USR1 before the time limit: every process of the run checkpoints and exits; then requeue.
STOPPED=0
trap 'STOPPED=1; scancel --signal=TERM "$SLURM_JOB_ID"' USR1

# One launcher per node; single quotes, so that each node reads its own $SLURM_NODEID.
srun --kill-on-bad-exit=1 bash -c 'exec "$PYTHON" -m accelerate.commands.launch --quiet \
  --config_file @CONFIG@ --multi_gpu --same_network --rdzv_backend static \
  --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * @GPUS@)) \
  --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP" --main_process_port "$MAIN_PORT" "$@"' \
  launch "${TRAIN[@]}" &
SRUN=$!
wait "$SRUN"  # returns early when USR1 is trapped ...
wait "$SRUN"  # ... then waits for the checkpoints to be written
CODE=$?
if [ "$STOPPED" = 1 ]; then
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$CODE"
"""


def multinode_script(nodes: int, gpus_per_node: int, run_dir: str, train: list[str], settings: SlurmSettings,
                     script: str) -> str:
    """The sbatch script for `train` (a program and its flags) on `nodes` nodes, in `run_dir`."""
    options = [f"#SBATCH --partition={settings.partition}"] if settings.partition else []
    options += [f"#SBATCH --mem={settings.mem}"] if settings.mem else []
    options += [f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={v}" for k, v in settings.sbatch.items()]
    train = [*train, f"--output_dir={run_dir}", "--resume=auto"]
    fields = {"NODES": nodes, "GPUS": gpus_per_node, "CPUS": settings.cpus_per_job, "TIME": settings.time_min,
              "DELAY": SIGNAL_DELAY_S, "RUN_DIR": run_dir, "SCRIPT": script,
              "WORKDIR": shlex.quote(str(Path.cwd())), "PYTHON": shlex.quote(sys.executable),
              "TRAIN": shlex.join(train), "CONFIG": shlex.quote(str(ROOT / "accelerate_config.yaml"))}
    text = TEMPLATE.replace("@OPTIONS@\n", "".join(line + "\n" for line in options))
    for name, value in fields.items():
        text = text.replace(f"@{name}@", str(value))
    return text
