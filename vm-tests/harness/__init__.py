"""VM test harness: libvirt daemons, an isolated network, domains on overlays of the node image, console markers,
SSH checks, and a JSON report with a boot timeline picture per run.

Pure pieces (XML, marker parsing, SVG) are separate from the modules that touch libvirt, qemu-img, ssh or files.
"""
