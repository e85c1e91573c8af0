"""The lab's own package repositories and registry: what an air-gapped site's mirrors would hold, built here from
Debian's packages and the offline bundle, so stock-image nodes can install everything with no internet.
`lab.repo` builds and serves them (`python vm-tests/lab/repo.py build|serve|show`)."""
