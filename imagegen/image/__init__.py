"""Bootable node images built from Debian packages only (mmdebstrap, no mounts, no loop partitions)."""
