"""A small stand-in for Grafana's HTTP API (datasources, folders, dashboards), for the
provisioning contract tests. It follows Grafana's documented endpoints, status codes and
bodies closely enough to prove the calls we make; it is not Grafana and proves nothing about
Grafana's own behaviour."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeGrafana:
    def __init__(self, token: str) -> None:
        self.token = token
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "folderUid"}
        self.writes: list[tuple[str, str]] = []
        self._ids = 0
        self.lock = threading.Lock()

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method != "GET":
            self.writes.append((method, path))
        m = re.fullmatch(r"/api/datasources/uid/([^/]+)", path)
        if m and method == "GET":
            ds = self.datasources.get(m.group(1))
            if ds is None:
                return 404, {"message": "Data source not found"}
            shown = {k: v for k, v in ds.items() if k != "secureJsonData"}
            shown["secureJsonFields"] = {k: True for k in ds.get("secureJsonData", {})}
            return 200, shown
        if path == "/api/datasources" and method == "POST":
            if not body.get("name") or not body.get("type"):
                return 400, {"message": "Required fields missing"}
            if body.get("uid") in self.datasources:
                return 409, {"message": "data source with the same uid already exists"}
            ds = {**body, "id": self._next_id(), "version": 1}
            self.datasources[body["uid"]] = ds
            return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource added"}
        if m and method == "PUT":
            old = self.datasources.get(m.group(1))
            if old is None:
                return 404, {"message": "Data source not found"}
            ds = {**body, "id": old["id"], "version": old["version"] + 1}
            if "secureJsonData" not in body and "secureJsonData" in old:
                ds["secureJsonData"] = old["secureJsonData"]
            self.datasources[m.group(1)] = ds
            return 200, {"datasource": ds, "message": "Datasource updated"}
        m = re.fullmatch(r"/api/folders/([^/]+)", path)
        if m and method == "GET":
            folder = self.folders.get(m.group(1))
            return (200, folder) if folder else (404, {"message": "folder not found"})
        if path == "/api/folders" and method == "POST":
            uid = body.get("uid")
            if uid in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            folder = {"uid": uid, "title": body["title"], "id": self._next_id(), "version": 1}
            self.folders[uid] = folder
            return 200, folder
        if m and method == "PUT":
            folder = self.folders.get(m.group(1))
            if folder is None:
                return 404, {"message": "folder not found"}
            folder.update(title=body.get("title", folder["title"]), version=folder["version"] + 1)
            return 200, folder
        m = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if m and method == "GET":
            stored = self.dashboards.get(m.group(1))
            if stored is None:
                return 404, {"message": "Dashboard not found"}
            return 200, {
                "dashboard": copy.deepcopy(stored["dashboard"]),
                "meta": {
                    "folderUid": stored["folderUid"],
                    "version": stored["dashboard"]["version"],
                },
            }
        if path == "/api/dashboards/db" and method == "POST":
            dash = body.get("dashboard") or {}
            if not dash.get("title"):
                return 400, {"message": "Dashboard title cannot be empty"}
            folder_uid = body.get("folderUid", "")
            if folder_uid and folder_uid not in self.folders:
                return 400, {"message": "folder not found"}
            old = self.dashboards.get(dash.get("uid", ""))
            if old is not None and not body.get("overwrite"):
                return 412, {
                    "message": "A dashboard with the same uid already exists",
                    "status": "name-exists",
                }
            version = old["dashboard"]["version"] + 1 if old else 1
            dash_id = old["dashboard"]["id"] if old else self._next_id()
            stored_dash = {**copy.deepcopy(dash), "id": dash_id, "version": version}
            self.dashboards[dash["uid"]] = {"dashboard": stored_dash, "folderUid": folder_uid}
            return 200, {
                "id": dash_id,
                "uid": dash["uid"],
                "status": "success",
                "version": version,
                "url": f"/d/{dash['uid']}",
            }
        return 404, {"message": "Not found"}


@contextmanager
def serve(token: str) -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana(token)

    class Handler(BaseHTTPRequestHandler):
        def _do(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                self._send(401, {"message": "invalid API key"})
                return
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                self._send(400, {"message": "bad request data"})
                return
            with fake.lock:
                status, out = fake.handle(self.command, self.path.split("?")[0], body)
            self._send(status, out)

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _do

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
