"""OpenStack config drive v2 (`seeds/<name>-configdrive.iso`): an ISO labelled `config-2` holding
`openstack/latest/{meta_data.json,user_data,network_data.json}`, for clouds and hypervisors that attach a config
drive instead of a NoCloud seed (OpenStack Nova with `--config-drive true`, and anything booting an image whose
cloud-init lists ConfigDrive).

Shaped for what cloud-init's own code reads (cloudinit/sources/helpers/openstack.py, 22.4 and 25.1): `read_v2`
requires `meta_data.json` with `uuid` (cloud-init's instance-id; imagegen's stable one), takes `hostname` as the
local host name; `convert_net_json` turns `network_data.json` into network config v1: one `phy` link matched by
the plan's MAC and named `network.interface`, a static `ipv4` network with the default route through the gateway,
and one `dns` service per server. Pure: files in, bytes out; the ISO comes from imagegen.seediso's deterministic
builder.
"""

from __future__ import annotations

import json
from typing import Any

from imagegen.plan import Node, Plan
from imagegen.seediso import build_iso

VOLUME_ID = "config-2"
BASE = "openstack/latest"


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def meta_data(node: Node, instance_id: str) -> dict[str, Any]:
    return {"uuid": instance_id, "hostname": node.name, "name": node.name}


def network_data(plan: Plan, node: Node) -> dict[str, Any]:
    net = plan.network
    link = net.interface
    return {
        "links": [{"id": link, "name": link, "type": "phy", "ethernet_mac_address": node.mac}],
        "networks": [{
            "id": "network0", "link": link, "type": "ipv4", "ip_address": str(node.ip),
            "netmask": str(net.cidr.netmask),
            "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": str(net.gateway)}],
        }],
        "services": [{"type": "dns", "address": str(dns)} for dns in net.dns],
    }


def config_drive_files(plan: Plan, node: Node, instance_id: str, user_data: bytes) -> dict[str, bytes]:
    return {
        f"{BASE}/meta_data.json": _json(meta_data(node, instance_id)),
        f"{BASE}/network_data.json": _json(network_data(plan, node)),
        f"{BASE}/user_data": user_data,
    }


def build_config_drive(plan: Plan, node: Node, instance_id: str, user_data: bytes) -> bytes:
    return build_iso(config_drive_files(plan, node, instance_id, user_data), VOLUME_ID)
