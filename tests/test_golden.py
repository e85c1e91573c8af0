"""Golden files for every rendered artefact of every example plan. Secrets and state-dependent values are
masked, so the files show exactly what changed in the output when a template or rule changes.
Regenerate with `make golden` (pytest --regenerate)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import Rendered, plan_ids

GOLDEN = Path(__file__).parent / "golden"
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----[\sA-Za-z0-9+/=]+?-----END \1-----")


def mask(text: str, r: Rendered) -> str:
    s = r.state
    text = _PEM.sub(lambda m: f"<{m.group(1)}>", text)
    replacements = {
        s.bootstrap_token: "<BOOTSTRAP-TOKEN>",
        s.certificate_key: "<CERTIFICATE-KEY>",
        s.discovery_hash: "<DISCOVERY-HASH>",
    }
    for secret, name in ((s.vrrp_password, "<VRRP-PASSWORD>"), (s.harbor_admin_password, "<HARBOR-ADMIN-PASSWORD>"),
                         (s.harbor_db_password, "<HARBOR-DB-PASSWORD>")):
        if secret:
            replacements[secret] = name
    for secret, name in replacements.items():
        text = text.replace(secret, name)
    text = re.sub(r"(instance-id: [a-z0-9-]+)-[0-9a-f]{12}", r"\1-<DIGEST>", text)
    text = re.sub(r'"[0-9a-f]{64}"', '"<SHA256>"', text)
    text = re.sub(r"(-data: )[A-Za-z0-9+/=]{40,}", r"\1<BASE64>", text)
    return text


def _artefacts(r: Rendered) -> dict[str, str]:
    # Seed ISOs and guestinfo are encodings of the files above, checked by their own tests (test_seediso,
    # test_channels); their bytes follow the state's random keys.
    derived = (".iso", "/guestinfo.vmx", "/govc-vm-change.sh", "/user-data.gz")
    return {path: mask(a.data.decode(), r) for path, a in sorted(r.artifacts.items()) if not path.endswith(derived)}


@pytest.mark.parametrize("plan_id", plan_ids())
def test_golden(rendered: dict[str, Rendered], plan_id: str, request: pytest.FixtureRequest) -> None:
    r = rendered[plan_id]
    root = GOLDEN / plan_id
    current = _artefacts(r)
    if request.config.getoption("--regenerate"):
        for path in sorted(root.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        for rel, text in current.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    stored = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert sorted(stored) == sorted(current), "files differ from the golden set; run `make golden` and review"
    for rel in current:
        assert current[rel] == stored[rel], f"{plan_id}/{rel} differs from its golden file; run `make golden`"


def test_masking_hides_every_secret(rendered: dict[str, Rendered]) -> None:
    r = rendered["ha"]
    text = "".join(_artefacts(r).values())
    for secret in (r.state.bootstrap_token, r.state.certificate_key, r.state.harbor_db_password,
                   r.state.vrrp_password, "PRIVATE KEY-----"):
        assert secret not in text
