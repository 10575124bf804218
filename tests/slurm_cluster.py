"""A real one-node Slurm for the tests: Debian's slurm-wlm and munge (installed with apt-get when
absent), a slurm.conf for localhost with 2 CPUs and no GPU, and munged, slurmctld and slurmd
started in the foreground in a temporary folder, stopped by their process ids. `start` raises
Unavailable with one line saying why it cannot (not root, no package access), to skip with; a
daemon that does not come up is an error.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")
CONF = """ClusterName=danntest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# No cgroups in a container: processes are tracked by parentage, as Slurm signals them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName=localhost CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Unavailable(Exception):
    pass


def install() -> None:
    """slurm-wlm and munge from Debian's packages, unless they are there."""
    if all(shutil.which(p) for p in PROGRAMS):
        return
    if os.geteuid() != 0:
        raise Unavailable("Slurm is not installed and installing it needs root (apt-get install slurm-wlm munge)")
    if shutil.which("apt-get") is None:
        raise Unavailable("Slurm is not installed and there is no apt-get to install slurm-wlm and munge")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(install, capture_output=True, text=True, env=env)
    if done.returncode:  # a fresh machine may not have the package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        done = subprocess.run(install, capture_output=True, text=True, env=env)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise Unavailable(f"apt-get install slurm-wlm munge failed (no package access?): {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    env: dict  # SLURM_CONF: what every Slurm command (and the jobs) must see
    daemons: list = field(default_factory=list)

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        if self.daemons and self.daemons[-1].poll() is None:  # jobs a failed test left: their processes end too
            subprocess.run(["scancel", f"--user={getpass.getuser()}"], env=env, capture_output=True, timeout=60)
            deadline = time.time() + 60
            while time.time() < deadline and subprocess.run(["squeue", "--noheader"], env=env, capture_output=True,
                                                            text=True, timeout=60).stdout.strip():
                time.sleep(0.5)
        for process in reversed(self.daemons):  # slurmd, slurmctld, then munged
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        return "".join(p.read_text(errors="replace")[-2000:] for p in sorted((self.root / "log").glob("*.log")))


def start(root: Path) -> Cluster:
    """Install if needed, configure and start a one-node cluster in `root`; ready when its node is idle."""
    if os.geteuid() != 0:
        raise Unavailable("starting slurmctld, slurmd and munged needs root")
    install()
    for folder in ("run", "state", "spool", "log", "munge"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "munge").chmod(0o700)  # munged refuses a key others can read
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(root=root, ctld_port=free_port(), slurmd_port=free_port()))
    cluster = Cluster(root, {"SLURM_CONF": str(conf)})
    env = {**os.environ, **cluster.env}
    commands = [["munged", "--foreground", "--force", f"--socket={root}/run/munge.sock", f"--key-file={key}",
                 f"--log-file={root}/log/munged.log", f"--pid-file={root}/run/munged.pid",
                 f"--seed-file={root}/munge/seed"],
                ["slurmctld", "-D", "-f", str(conf)],
                ["slurmd", "-D", "-N", "localhost", "-f", str(conf)]]
    try:
        for command in commands:
            cluster.daemons.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL, start_new_session=True))
            time.sleep(0.5)  # slurmctld needs munged's socket, slurmd the controller
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, env=env)
            if state.stdout.strip() == "idle":
                return cluster
            ended = [c[0] for c, p in zip(commands, cluster.daemons) if p.poll() is not None]
            if ended:
                break
            time.sleep(0.5)
        raise RuntimeError(f"the test Slurm did not come up ({', '.join(ended) or 'no idle node'}): "
                          + (cluster.log().strip().splitlines() or ["no log"])[-1])
    except BaseException:
        cluster.stop()
        raise
