"""`accelerate launch` as the runners start it (`python -m dann.experiments.launch ARGS`, ARGS
those of `accelerate launch`): the same launcher, except that SIGTERM does not stop it.

The training stops itself on SIGTERM: it finishes its step, writes a checkpoint and exits.
Accelerate's launcher, signalled too (the runners signal a run's process group, Slurm every
process of a job), would kill it 5 s later, in the middle of a big checkpoint, and drops the
last lines of the stderr it relays on a second SIGTERM. Here it waits for the training instead;
if the runner dies, it dies with it (SIGKILL), and the training gets its SIGTERM from that.
"""
import runpy
import signal

from dann.signals import die_with_parent


def main() -> None:
    die_with_parent(signal.SIGKILL)
    # Caught, not ignored: an ignored signal stays ignored in the training it starts.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    install = signal.signal
    # Accelerate's launcher (and torch's elastic agent, with several processes) install their own SIGTERM
    # handler: keep ours.
    signal.signal = lambda signum, handler: (signal.getsignal(signum) if signum == signal.SIGTERM
                                             else install(signum, handler))
    runpy.run_module("accelerate.commands.launch", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
