"""The node program as data: which files a node's first-boot program is made of, decided from its step list.

Each step is one file, `cloud-init/steps/<step>.sh.j2`, defining `step_<step>`, with a header the renderer reads:

    # imagegen step: join_worker
    # roles: worker
    # needs: kubeadm runtime

`roles` are the roles whose profiles may list the step (checked when a profile is loaded); `needs` names the shared
parts (`cloud-init/node/<part>.sh.j2`) and seams (`runtime`: `cloud-init/runtime/<container runtime>.sh.j2`) the
step calls. A node receives the runner (bootstrap.sh), lib.sh and the distro seam (profile `_base`), plus exactly its
own steps and what they need: a load balancer carries no kubeadm, runtime or bundle code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from imagegen.profiles import FileSpec, ProfileError
from imagegen.resources import data_dir

LIB_DIR = "/usr/local/lib/imagegen"
PARTS = ("bundle", "kubeadm")
SEAMS = {"runtime": FileSpec(path=f"{LIB_DIR}/runtime.sh", template="runtime/{{ cluster.container_runtime }}.sh.j2",
                             mode="0755", shell=True)}
_HEADER = re.compile(r"#!/bin/bash\n# imagegen step: (?P<name>[a-z_]+)\n# roles:(?P<roles>[a-z -]*)\n"
                     r"# needs:(?P<needs>[a-z ]*)\n")


@dataclass(frozen=True)
class StepInfo:
    name: str
    roles: tuple[str, ...]
    needs: tuple[str, ...]


@cache
def step_info(name: str) -> StepInfo:
    path = data_dir() / "cloud-init" / "steps" / f"{name}.sh.j2"
    if not re.fullmatch(r"[a-z_]+", name) or not path.is_file():
        raise ProfileError(f"step {name!r}: no step file cloud-init/steps/{name}.sh.j2")
    m = _HEADER.match(path.read_text())
    if not m or m["name"] != name:
        raise ProfileError(f"cloud-init/steps/{name}.sh.j2: the header must start '#!/bin/bash', "
                           f"'# imagegen step: {name}', '# roles: ...', '# needs: ...'")
    needs = tuple(m["needs"].split())
    unknown = [n for n in needs if n not in PARTS and n not in SEAMS]
    if unknown:
        raise ProfileError(f"cloud-init/steps/{name}.sh.j2: needs {unknown}; known: {', '.join((*PARTS, *SEAMS))}")
    return StepInfo(name=name, roles=tuple(m["roles"].split()), needs=needs)


def check_steps(role: str, steps: Iterable[str]) -> None:
    """A profile may list only steps whose header names its role."""
    for name in steps:
        info = step_info(name)
        if role not in info.roles:
            raise ProfileError(f"profiles/{role}.yaml: step {name} runs on {', '.join(info.roles)}, not {role}")


def program_files(steps: Iterable[str]) -> tuple[FileSpec, ...]:
    """The seams, parts and step files a node with these steps receives, in a fixed order."""
    infos = [step_info(s) for s in steps]
    needed = {n for info in infos for n in info.needs}
    files = [SEAMS[s] for s in SEAMS if s in needed]
    files += [FileSpec(path=f"{LIB_DIR}/parts/{p}.sh", template=f"node/{p}.sh.j2", mode="0755", shell=True)
              for p in PARTS if p in needed]
    files += [FileSpec(path=f"{LIB_DIR}/steps/{i.name}.sh", template=f"steps/{i.name}.sh.j2", mode="0755",
                       shell=True) for i in infos]
    return tuple(files)
