"""VM harness pure parts: libvirt XML (structure), console marker scanning, user-data expectations, timeline SVG."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm-tests"))

from harness import guest  # noqa: E402
from harness.console import MarkerScanner  # noqa: E402
from harness.report import RunReport  # noqa: E402
from harness.timeline import Row, render_timeline  # noqa: E402
from harness.xml import DomainSpec, HostEntry, NetworkSpec, domain_xml, network_xml  # noqa: E402

NET = NetworkSpec(name="imagegen-t", bridge="igvmabc123", cidr="10.78.0.0/24", gateway="10.78.0.1",
                  hosts=(HostEntry("52:54:00:78:00:02", "10.78.0.2", "lb-1"),
                         HostEntry("52:54:00:78:00:21", "10.78.0.21", "worker-1")))


def dom(**kw: object) -> DomainSpec:
    base = dict(name="imagegen-t-lb-1", memory_mib=1024, vcpus=1, disk="/runs/d/lb-1.qcow2",
                seed_iso="/runs/r/seeds/lb-1.iso", mac="52:54:00:78:00:02", network="imagegen-t",
                serial_log="/runs/console/lb-1.log", accel="tcg")
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def test_network_is_nat_without_dns_and_reserves_every_mac() -> None:
    root = ET.fromstring(network_xml(NET))
    assert root.find("forward").get("mode") == "nat"
    assert root.find("dns").get("enable") == "no"  # dnsmasq must never forward a guest's query
    assert root.find("bridge").get("name") == "igvmabc123"
    ip = root.find("ip")
    assert (ip.get("address"), ip.get("netmask")) == ("10.78.0.1", "255.255.255.0")
    hosts = {h.get("mac"): h.get("ip") for h in ip.findall("dhcp/host")}
    assert hosts == {"52:54:00:78:00:02": "10.78.0.2", "52:54:00:78:00:21": "10.78.0.21"}
    rng = ip.find("dhcp/range")
    assert rng.get("start") == "10.78.0.245" and rng.get("end") == "10.78.0.254"


@pytest.mark.parametrize(("change", "match"), [
    ({"bridge": "a-very-long-bridge-name"}, "15 characters"),
    ({"gateway": "10.99.0.1"}, "outside"),
    ({"hosts": (HostEntry("52:54:00:00:00:01", "10.1.1.1", "x"),)}, "x: address"),
])
def test_network_spec_rejects_inconsistent_input(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NetworkSpec(**{**NET.__dict__, **change})


def test_tcg_domain_uses_qemu_type_maximum_cpu_and_tb_cache() -> None:
    root = ET.fromstring(domain_xml(dom()))
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "maximum"
    assert root.find("features/tcg/tb-cache").text == "256"
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("os/loader") is None  # SeaBIOS


def test_kvm_domain_passes_the_host_cpu_through() -> None:
    root = ET.fromstring(domain_xml(dom(accel="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("features/tcg") is None


def test_seed_is_a_virtio_scsi_cdrom_and_serial_is_logged() -> None:
    root = ET.fromstring(domain_xml(dom()))
    cdrom = [d for d in root.findall("devices/disk") if d.get("device") == "cdrom"]
    assert len(cdrom) == 1 and cdrom[0].find("target").get("bus") == "scsi"
    assert cdrom[0].find("readonly") is not None
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert root.find("devices/serial/log").get("file") == "/runs/console/lb-1.log"
    nic = root.find("devices/interface")
    assert nic.find("mac").get("address") == "52:54:00:78:00:02" and nic.find("source").get("network") == "imagegen-t"


def test_uefi_domain_has_ovmf_and_per_domain_nvram() -> None:
    root = ET.fromstring(domain_xml(dom(firmware="uefi", nvram="/runs/d/lb-1.nvram.fd")))
    assert root.find("os/loader").text.endswith("OVMF_CODE_4M.fd")
    assert root.find("os/nvram").text == "/runs/d/lb-1.nvram.fd"


def test_shared_bundle_disk_is_read_only_and_shareable() -> None:
    root = ET.fromstring(domain_xml(dom(extra_disks=("/b/bundle.ext4",))))
    extra = [d for d in root.findall("devices/disk") if d.find("source").get("file") == "/b/bundle.ext4"][0]
    assert extra.find("readonly") is not None and extra.find("shareable") is not None
    assert extra.find("target").get("dev") == "vdb"


def test_smbios_serial_reaches_the_system_entry_through_sysinfo() -> None:
    root = ET.fromstring(domain_xml(dom(smbios_serial="ds=nocloud-net;s=http://10.81.0.1:8080/nodes/a&b/")))
    assert root.find("os/smbios").get("mode") == "sysinfo"
    assert root.find("sysinfo").get("type") == "smbios"
    assert root.find("sysinfo/system/entry[@name='serial']").text == "ds=nocloud-net;s=http://10.81.0.1:8080/nodes/a&b/"
    plain = ET.fromstring(domain_xml(dom()))
    assert plain.find("sysinfo") is None and plain.find("os/smbios") is None


def test_bad_accel_or_firmware() -> None:
    with pytest.raises(ValueError, match="accel"):
        domain_xml(dom(accel="hvf"))
    with pytest.raises(ValueError, match="firmware"):
        domain_xml(dom(firmware="coreboot"))


def test_scanner_finds_markers_across_chunk_boundaries() -> None:
    s = MarkerScanner()
    assert s.feed("[    0.000000] Linux version 6.1.0 (x)\nIMAGEGEN-PREP-", 3.0)[0].kind == "kernel"
    new = s.feed("OK node=w1\r\nIMAGEGEN-BOOTSTRAP-FAILED node=w1 step=install_kubernetes reason=bundle-x\n", 9.5)
    assert [m.kind for m in new] == ["prep-ok", "bootstrap-failed"]
    failed = s.markers["bootstrap-failed"]
    assert failed.fields == {"node": "w1", "step": "install_kubernetes", "reason": "bundle-x"}
    assert failed.at == 9.5
    assert s.feed("IMAGEGEN-PREP-OK node=w1\n", 20.0) == []  # first occurrence wins


def test_scanner_records_fatal_lines() -> None:
    s = MarkerScanner()
    s.feed("[  5.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n", 5.1)
    assert s.fatal and "Kernel panic" in s.fatal[0]


USER_DATA = """#cloud-config
write_files:
- path: /etc/modules-load.d/k.conf
  content: |
    # comment
    br_netfilter
    overlay
- path: /etc/sysctl.d/90-k.conf
  content: |
    net.ipv4.ip_forward = 1
    vm.swappiness=0
- path: /etc/systemd/journald.conf.d/90-imagegen.conf
  content: "[Journal]\\n"
- path: /etc/docker/daemon.json
  encoding: b64
  content: eyJleGVjLW9wdHMiOiBbIm5hdGl2ZS5jZ3JvdXBkcml2ZXI9c3lzdGVtZCJdLCAibGl2ZS1yZXN0b3JlIjogdHJ1ZX0=
"""


def test_expectations_come_from_the_user_data() -> None:
    exp = guest.expectations_from_user_data(USER_DATA)
    assert exp.modules == ("br_netfilter", "overlay")
    assert exp.sysctls == (("net.ipv4.ip_forward", "1"), ("vm.swappiness", "0"))
    assert exp.journald_dropins == ("/etc/systemd/journald.conf.d/90-imagegen.conf",)
    assert exp.docker_daemon == {"exec-opts": ["native.cgroupdriver=systemd"], "live-restore": True}
    assert exp.containerd_config is False


def test_timeline_svg_has_a_lane_per_node_and_a_mark_per_event() -> None:
    rows = [Row("lb-1", "load-balancer", (("kernel", 4.0), ("cloud-init-done", 90.5)), True),
            Row("w-1", "worker", (("kernel", 5.0), ("prep-ok", 120.0), ("bootstrap-failed", 190.0)), False)]
    svg = render_timeline(rows, "smoke <run>")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "lb-1" in texts and "w-1" in texts and "smoke <run>" in texts
    assert "bootstrap-failed 190s" in texts
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("{http://www.w3.org/2000/svg}title")
            is not None]
    assert len(bars) == 3  # one bar between consecutive events of each lane
    assert render_timeline(rows, "smoke <run>") == svg  # deterministic


def _report() -> RunReport:
    return RunReport(run_id="r", plan="p", image="i", accel="tcg", started_at="t")


def test_report_conclude_from_checks() -> None:
    from harness.report import Check

    report = _report()
    report.checks = [Check("a", "one", True, "", 0.0), Check("b", "two", False, "why", 0.0)]
    assert report.conclude() == 1
    assert report.result == "failed" and report.error == "1 check(s) failed: b: two"
    report.checks[1].ok = True
    assert report.conclude() == 0 and report.result == "passed"


def test_report_record_exception_exit_codes(capsys) -> None:
    class Expected(Exception):
        pass

    class Usage(Exception):
        pass

    cases = [(KeyboardInterrupt(), 130, "interrupted", "interrupted (Ctrl-C or SIGTERM)"),
             (Usage("bad plan"), 2, "failed", "bad plan"),
             (Expected("no marker"), 1, "failed", "no marker"),
             (ValueError("boom"), 1, "failed", "ValueError: boom")]
    for exc, code, result, error in cases:
        report = _report()
        assert report.record_exception(exc, usage=(Usage,), expected=(Expected,)) == code
        assert (report.result, report.error) == (result, error)
    assert "ValueError: boom" in capsys.readouterr().err  # a crash prints its traceback


def test_report_summary_names_result_problems_and_evidence() -> None:
    r = _report()
    r.result, r.wall_seconds, r.error = "failed", 12.4, "cp-1: no bootstrap marker"
    text = r.summary("cluster-test", Path("/runs/x/report.json"), Path("/runs/x/timeline.svg"), Path("/runs/x"))
    assert text.splitlines()[1] == "cluster-test failed in 12 s: cp-1: no bootstrap marker"
    assert "cleanup problems" not in text and "run directory: /runs/x" in text
    r.cleanup_problems = ["network: busy"]
    assert "cleanup problems: network: busy" in r.summary("vm-smoke", Path("a"), Path("b"), Path("c"))


def test_report_summary_prints_guest_cpu_seconds_per_node() -> None:
    from harness.report import NodeReport

    r = _report()
    r.nodes = [NodeReport("cp-1", "control-plane", "10.0.0.11",
                          cpu_seconds={"kernel": 4.0, "cloud-init-done": 212.4, "bootstrap-ok": 1301.6}),
               NodeReport("lb-1", "load-balancer", "10.0.0.2")]
    text = r.summary("cluster-test", Path("a"), Path("b"), Path("c"))
    assert "guest CPU seconds cp-1: cloud-init-done 212, bootstrap-ok 1302" in text
    assert "lb-1" not in text  # no samples, no line
