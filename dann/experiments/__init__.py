"""The experiment tier: many training runs and what is learnt from them, on top of the library
(which never imports this package; tests/test_sweeps.py checks it).

grids (W&B sweep YAMLs as grids of runs), local and slurm (who runs them: child processes K at
a time per GPU, or Slurm jobs that requeue), multinode (one run over several Slurm nodes),
tables (methods x pairs x backbones over seeds), choosing (a configuration picked by a rule,
and each rule measured against the oracle), homework and homework_report (the first homework
end to end). `sweep.py` is their command line.
"""
