"""Other VMs on this host: two shared cores cannot run two VM suites at once without starving both."""

from __future__ import annotations

import subprocess
import time


def other_vms() -> list[str]:
    """qemu processes already running on this host (zombies left by earlier runs do not count)."""
    done = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=False)
    return [ln.strip()[:100] for ln in done.stdout.splitlines()
            if "qemu-system" in ln and not ln.split()[1].startswith("Z")]


def wait_for_other_vms(limit_s: float) -> float:
    """2 host cores: another VM run (vm-smoke) starves ours and theirs, so wait for it to end first."""
    t0 = time.monotonic()
    while (running := other_vms()) and time.monotonic() - t0 < limit_s:
        print(f"  {len(running)} other qemu process(es) running ({running[0][:60]} ...): waiting 30 s", flush=True)
        time.sleep(30)
    return round(time.monotonic() - t0, 1)
