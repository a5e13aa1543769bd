"""An in-memory Hugging Face Hub behind huggingface_hub's own HTTP client, recording every request.

It answers the calls the loaders make: repo info and file tree (`/api/models/...`) and file metadata and contents
(`HEAD` / `GET .../resolve/<revision>/<path>`). Everything else gets a 404.
"""

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote

import httpx2
import huggingface_hub
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str, str | None]] = []  # (method, repo, revision, path)

    def add_repo(self, repo_id: str, directory: Path, extra: dict[str, bytes] | None = None) -> None:
        files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        self.repos[repo_id] = {**files, **(extra or {})}

    def downloads(self, repo_id: str) -> set[str]:
        return {path for method, repo, _, path in self.requests if method == "GET" and repo == repo_id and path}

    @staticmethod
    def _commit(repo_id: str, revision: str) -> str:
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            return revision
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        path = unquote(request.url.path)
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path):
            repo, kind, revision, _ = match.groups()
            self.requests.append((kind.upper(), repo, revision, None))
            if repo not in self.repos:
                return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"})
            files = sorted(self.repos[repo].items())
            if kind == "tree":
                return httpx2.Response(200, json=[
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in files
                ])
            return httpx2.Response(200, json={"id": repo, "sha": self._commit(repo, revision), "private": False,
                                               "siblings": [{"rfilename": name} for name, _ in files]})
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo, revision, name = match.groups()
            self.requests.append((request.method, repo, revision, name))
            data = self.repos.get(repo, {}).get(name)
            if data is None:
                return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"})
            headers = {"X-Repo-Commit": self._commit(repo, revision), "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                       "Content-Length": str(len(data))}
            return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)
        return httpx2.Response(404)

    def install(self) -> None:
        """Routes huggingface_hub's requests here (its offline check still runs first); `uninstall` undoes it."""
        huggingface_hub.set_client_factory(lambda: httpx2.Client(
            transport=httpx2.MockTransport(self._handle), event_hooks={"request": [hf_request_event_hook]},
            follow_redirects=True,
        ))

    @staticmethod
    def uninstall() -> None:
        huggingface_hub.set_client_factory(default_client_factory)
