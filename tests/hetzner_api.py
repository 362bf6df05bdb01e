"""A local stand-in for the Hetzner Cloud API (stdlib http.server on 127.0.0.1) for vpsctl preflight.

It answers GET /v1/{server_types,locations,images,firewalls,servers,ssh_keys} with the documented
response shapes (field names and nesting as in the API reference and hcloud-python's own test
fixtures: per-location server types with deprecation and availability, prices per location, images
with architecture, paginated ``meta``), filters by the query parameters the client sends, checks the
bearer token, and records every request. Pages hold ``page_size`` entries so pagination is exercised.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from cloudinit import catalogue

CREATED = "2025-11-03T09:12:41+00:00"
LOCATION_IDS = {"fsn1": 1, "nbg1": 2, "hel1": 3, "ash": 4, "hil": 5, "sin": 6}
CITIES = {"fsn1": ("DE", 50.47612, 12.370071), "nbg1": ("DE", 49.452102, 11.076665), "hel1": ("FI", 60.169855, 24.938379),
          "ash": ("US", 39.045821, -77.487073), "hil": ("US", 45.54222, -122.951924), "sin": ("SG", 1.283333, 103.833333)}


def location(name: str) -> dict[str, Any]:
    city, zone = catalogue.LOCATIONS[name]
    country, lat, lon = CITIES[name]
    return {"id": LOCATION_IDS[name], "name": name, "description": f"{city} DC Park 1", "country": country, "city": city,
            "latitude": lat, "longitude": lon, "network_zone": zone}


def price(loc: str) -> dict[str, Any]:
    return {
        "location": loc,
        "price_hourly": {"net": "0.0048000000", "gross": "0.0057120000000000"},
        "price_monthly": {"net": "2.9900000000", "gross": "3.5581000000000000"},
        "included_traffic": 21990232555520,
        "price_per_tb_traffic": {"net": "1.0000000000", "gross": "1.1900000000000000"},
    }


def server_type(type_id: int, name: str, locations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``locations``: name -> overrides of the per-location entry (``available``, ``deprecation``)."""
    kind = catalogue.SERVER_TYPES[name]
    return {
        "id": type_id,
        "name": name,
        "description": name.upper(),
        "category": kind.family.name,
        "cores": 2,
        "memory": 4.0,
        "disk": 40,
        "deprecated": False,
        "deprecation": None,
        "prices": [price(loc) for loc in locations],
        "storage_type": "local",
        "cpu_type": kind.family.cpu,
        "architecture": kind.architecture,
        "locations": [
            {"id": LOCATION_IDS[loc], "name": loc, "deprecation": None, "available": True, "recommended": True, **extra}
            for loc, extra in locations.items()
        ],
    }


def image(image_id: int, name: str, architecture: str, deprecation: dict[str, str] | None = None) -> dict[str, Any]:
    """A system image (``deprecation`` replaced the ``deprecated`` timestamp on 2026-09-08)."""
    flavor, _, version = name.partition("-")
    return {"id": image_id, "type": "system", "status": "available", "name": name, "description": f"{flavor} {version}",
            "image_size": None, "disk_size": 5, "created": CREATED, "created_from": None, "bound_to": None,
            "os_flavor": flavor, "os_version": version, "architecture": architecture, "rapid_deploy": True,
            "protection": {"delete": False}, "deprecation": deprecation, "deleted": None, "labels": {}}


def firewall(firewall_id: int, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": firewall_id, "name": name, "labels": labels or {}, "created": CREATED, "rules": [], "applied_to": []}


def server(server_id: int, name: str, labels: dict[str, str] | None = None, server_type_name: str = "cx23") -> dict[str, Any]:
    return {
        "id": server_id, "name": name, "status": "running", "created": CREATED,
        "public_net": {
            "ipv4": {"id": server_id * 10, "ip": "203.0.113.7", "blocked": False, "dns_ptr": "static.example.com"},
            "ipv6": {"id": server_id * 10 + 1, "ip": "2001:db8:7::/64", "blocked": False, "dns_ptr": []},
            "floating_ips": [], "firewalls": [],
        },
        "private_net": [], "server_type": server_type(1, server_type_name, {"fsn1": {}}), "location": location("fsn1"),
        "image": image(114690387, "debian-12", "x86"), "iso": None, "rescue_enabled": False, "locked": False,
        "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0, "included_traffic": 21990232555520,
        "protection": {"delete": False, "rebuild": False}, "labels": labels or {}, "volumes": [], "load_balancers": [],
        "primary_disk_size": 40, "placement_group": None,
    }  # fmt: skip


def ssh_key(key_id: int, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": key_id, "name": name, "fingerprint": "b7:2f:30:a0:2f:6c:58:6c:21:04:58:61:ba:06:3b:2f",
            "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake0 other",
            "labels": labels or {}, "created": CREATED}


def current_catalogue() -> dict[str, list[dict[str, Any]]]:
    """Every current type where its family is sold, every supported image for x86 and arm."""
    types = [server_type(i + 1, t.name, {loc: {} for loc in t.family.locations})
             for i, t in enumerate(t for t in catalogue.SERVER_TYPES.values() if t.retirement is None)]
    images = [image(100 + i, name, arch) for i, (name, arch) in
              enumerate((n, a) for n in catalogue.IMAGES for a in (catalogue.X86, catalogue.ARM))]
    return {"server_types": types, "locations": [location(n) for n in catalogue.LOCATIONS], "images": images,
            "firewalls": [], "servers": [], "ssh_keys": []}


@dataclass
class FakeHetzner:
    token: str
    data: dict[str, list[dict[str, Any]]] = field(default_factory=current_catalogue)
    page_size: int = 7
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)

    def answer(self, path: str, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, query))
        if authorization != f"Bearer {self.token}":
            return 401, {"error": {"code": "unauthorized", "message": "unable to authenticate", "details": {}}}
        collection = path.removeprefix("/v1/")
        if collection not in self.data:
            return 404, {"error": {"code": "not_found", "message": "not found", "details": {}}}
        items = [copy.deepcopy(i) for i in self.data[collection] if self._matches(i, query)]
        per_page = min(int(query.get("per_page", ["25"])[0]), self.page_size)
        page = int(query.get("page", ["1"])[0])
        last = max(1, -(-len(items) // per_page))
        meta = {"pagination": {"page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
                               "next_page": page + 1 if page < last else None, "last_page": last, "total_entries": len(items)}}
        return 200, {collection: items[(page - 1) * per_page : page * per_page], "meta": meta}

    @staticmethod
    def _matches(item: dict[str, Any], query: dict[str, list[str]]) -> bool:
        if "name" in query and item.get("name") != query["name"][0]:
            return False
        if "architecture" in query and item.get("architecture") not in query["architecture"]:
            return False
        if "type" in query and item.get("type") not in query["type"]:
            return False
        return not ("include_deprecated" not in query and item.get("deprecation"))

    @contextmanager
    def serve(self) -> Iterator[str]:
        """The API's endpoint URL (``.../v1``) while a loopback server answers for it."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's method name
                url = urlparse(self.path)
                status, body = fake.answer(url.path, parse_qs(url.query), self.headers.get("Authorization"))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass  # quiet: the test reads fake.requests

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)
