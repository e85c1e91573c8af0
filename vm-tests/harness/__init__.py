"""VM test harness: libvirt daemons, an isolated network, domains on overlays of the node image, console markers,
SSH checks, and a JSON report with a boot timeline picture per run.

harness.session owns a run from its directory to its report (setup, teardown, exit status); the suites' steps live
in vm-tests/scenarios/. Pure pieces (XML, marker parsing, SVG) are separate from the modules that touch libvirt,
qemu-img, ssh or files.
"""
