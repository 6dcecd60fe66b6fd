"""A loopback Hugging Face Hub: the subset of the Hub's HTTP API that ``huggingface_hub`` calls.

The real Hub is unreachable from the test machines, so the hub tests run against this server, bound
to a free port on 127.0.0.1 and served from a daemon thread. It implements what the client actually
sends while pushing a checkpoint and loading it back with timm (read from
``huggingface_hub/hf_api.py``, ``_commit_api.py``, ``lfs.py`` and ``file_download.py``, and checked
by recording every request the server does not know in :attr:`LoopbackHub.unknown_requests`):

=========================================================  =========================================
request                                                    used by
=========================================================  =========================================
``GET  /api/whoami-v2``                                    ``HfApi.whoami``
``POST /api/repos/create``                                 ``HfApi.create_repo``
``POST /api/validate-yaml``                                ``create_commit`` when it adds README.md
``POST /api/models/{repo}/preupload/{rev}``                ``create_commit``: regular or LFS per file
``POST /{repo}.git/info/lfs/objects/batch``                LFS batch API (``basic`` transfer only)
``PUT  /lfs-upload/{sha256}``                              the ``href`` the batch answer hands out
``POST /api/models/{repo}/commit/{rev}``                   NDJSON commit: ``header``, ``file``
                                                           (base64), ``lfsFile``, ``deletedFile``,
                                                           ``deletedFolder``
``POST /api/models/{repo}/branch/{branch}``                ``HfApi.create_branch``
``GET  /api/models/{repo}[/revision/{rev}]``               ``HfApi.model_info`` / ``repo_info``
``GET  /api/models/{repo}/tree/{rev}[/{path}]``            ``HfApi.list_repo_tree`` / ``list_repo_files``
``POST /api/models/{repo}/paths-info/{rev}``               ``HfApi.get_paths_info``
``HEAD|GET /{repo}/resolve/{rev}/{path}``                  ``hf_hub_download`` (timm, ``ModelCard.load``)
=========================================================  =========================================

Behaviour kept from the real Hub because the client depends on it:

- Revisions are real: every commit gets a 40-hex id, branches point at commits, ``resolve`` answers
  with ``X-Repo-Commit`` and an ``ETag`` (the git blob id; for LFS files also ``X-Linked-Etag`` = the
  sha256 and ``X-Linked-Size``), so the client's cache keys on real commit ids.
- Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
  ``X-Error-Message`` so that ``hf_raise_for_status`` raises the same exception classes as online.
- Tokens: a request with an unknown bearer token gets 401 "Invalid credentials in Authorization
  header"; writes without a token get 401; a private repository is invisible (404) to anyone but
  its namespace's members. A token may create repositories only in its own user or org namespaces
  (403 otherwise); creating an existing repository answers 409, which ``create_repo(exist_ok=True)``
  accepts, so pushing to someone else's private repo fails at ``preupload`` with a 404.

Not served: Xet (tests set ``HF_HUB_DISABLE_XET=1``), multipart LFS, pull requests, datasets and
spaces, pagination (listings are returned in one page).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["HubUser", "LoopbackHub", "RecordedRequest", "git_blob_oid"]

_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".npz", ".png")
_LFS_THRESHOLD = 10 * 1024 * 1024
_TIMESTAMP = "2024-01-01T00:00:00.000Z"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (``git hash-object``), as the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    ).encode()


@dataclass(frozen=True)
class HubUser:
    """An account the server knows, with the organisations it belongs to."""

    name: str
    orgs: tuple[str, ...] = ()

    def can_write(self, namespace: str) -> bool:
        """Whether this user may create and push repositories in ``namespace``."""
        return namespace == self.name or namespace in self.orgs


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    status: int


@dataclass
class _File:
    size: int
    git_oid: str
    content: bytes | None = None  # regular file
    lfs_sha256: str | None = None  # LFS file (content in the LFS store)


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, _File]


@dataclass
class _Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/", 1)[0]


class _HubError(Exception):
    """Raised inside a handler to answer with an error status and the Hub's error headers."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body or {}


_Route = tuple[str, "re.Pattern[str]", Callable[..., None]]
_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"


class LoopbackHub:
    """An in-memory Hub served over HTTP on 127.0.0.1.

    Args:
        tokens: Bearer token -> account. Defaults to one write token for ``loopback-user`` (member of
            ``loopback-org``) and one for ``other-user``.

    Example:
        >>> hub = LoopbackHub().start()
        >>> hub.url  # doctest: +SKIP
        'http://127.0.0.1:40123'
        >>> hub.stop()
    """

    TOKEN = "hf_loopback_write_token"
    OTHER_TOKEN = "hf_loopback_other_token"

    def __init__(self, *, tokens: dict[str, HubUser] | None = None) -> None:
        self.tokens: dict[str, HubUser] = tokens if tokens is not None else {
            self.TOKEN: HubUser("loopback-user", ("loopback-org",)),
            self.OTHER_TOKEN: HubUser("other-user"),
        }
        self.repos: dict[str, _Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[str] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[_Route] = [
            ("GET", re.compile(r"/api/whoami-v2"), self._whoami),
            ("POST", re.compile(r"/api/repos/create"), self._create_repo),
            ("POST", re.compile(r"/api/validate-yaml"), self._validate_yaml),
            ("POST", re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"), self._preupload),
            ("POST", re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"), self._commit),
            ("POST", re.compile(rf"/api/models/{_REPO}/branch/(?P<rev>[^/]+)"), self._branch),
            ("POST", re.compile(rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)"), self._paths_info),
            ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"),
             self._tree),
            ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), self._model_info),
            ("POST", re.compile(rf"/{_REPO}\.git/info/lfs/objects/batch"), self._lfs_batch),
            ("PUT", re.compile(r"/lfs-upload/(?P<oid>[0-9a-f]{64})"), self._lfs_upload),
            ("GET", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
            ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), self._resolve),
        ]

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """Base URL (``HF_ENDPOINT``) of the running server."""
        if self._server is None:
            raise RuntimeError("the loopback Hub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ----------------------------------------------------------------------------- test helpers
    def seed_repo(self, repo_id: str, *, private: bool = False,
                  files: dict[str, bytes] | None = None) -> str:
        """Create ``repo_id`` directly (no auth) with ``files`` in one commit; return the commit id."""
        with self._lock:
            repo = self._new_repo(repo_id, private=private)
            entries = dict(repo.commits[repo.branches["main"]].files)
            for path, content in (files or {}).items():
                entries[path] = self._store(path, content)
            return self._add_commit(repo, "main", f"Seed {repo_id}", entries).oid

    def file_content(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """The content of ``path`` at ``revision`` (LFS files resolved)."""
        with self._lock:
            repo = self.repos[repo_id]
            return self._content(repo.commits[self._resolve_rev(repo, revision)].files[path])

    def head(self, repo_id: str, branch: str = "main") -> str:
        """The commit id ``branch`` points at."""
        return self.repos[repo_id].branches[branch]

    def commit_count(self, repo_id: str) -> int:
        """How many commits ``repo_id`` holds (the creation commit included)."""
        return len(self.repos[repo_id].commits)

    # ----------------------------------------------------------------------------- storage
    def _new_oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((str(self._counter), *parts)).encode()).hexdigest()

    def _new_repo(self, repo_id: str, *, private: bool) -> _Repo:
        repo = _Repo(repo_id=repo_id, private=private)
        self.repos[repo_id] = repo
        attributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n"
                             for suffix in _LFS_SUFFIXES).encode()
        entries = {".gitattributes": _File(size=len(attributes), git_oid=git_blob_oid(attributes),
                                           content=attributes)}
        self._add_commit(repo, "main", "initial commit", entries, parent=None)
        return repo

    def _add_commit(self, repo: _Repo, branch: str, title: str, files: dict[str, _File],
                    *, parent: str | None = "branch") -> _Commit:
        parent_oid = repo.branches.get(branch) if parent == "branch" else parent
        oid = self._new_oid(repo.repo_id, title, *(f"{p}:{f.git_oid}" for p, f in sorted(files.items())))
        commit = _Commit(oid=oid, parent=parent_oid, title=title, files=files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _store(self, path: str, content: bytes) -> _File:
        if self._wants_lfs(path, content[:512], len(content)):
            sha256 = hashlib.sha256(content).hexdigest()
            self.lfs_store[sha256] = content
            pointer = _lfs_pointer(sha256, len(content))
            return _File(size=len(content), git_oid=git_blob_oid(pointer), lfs_sha256=sha256)
        return _File(size=len(content), git_oid=git_blob_oid(content), content=content)

    @staticmethod
    def _wants_lfs(path: str, sample: bytes, size: int) -> bool:
        if path.endswith(_LFS_SUFFIXES) or size > _LFS_THRESHOLD:
            return True
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return b"\0" in sample

    def _content(self, entry: _File) -> bytes:
        if entry.lfs_sha256 is not None:
            return self.lfs_store[entry.lfs_sha256]
        assert entry.content is not None
        return entry.content

    # ----------------------------------------------------------------------------- access checks
    def _user(self, headers: Any, *, required: bool) -> HubUser | None:
        auth = headers.get("Authorization")
        if not auth:
            if required:
                raise _HubError(401, "You must be authenticated to access this resource.")
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.tokens.get(token)
        if user is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_id: str, user: HubUser | None, *, write: bool = False) -> _Repo:
        repo = self.repos.get(repo_id)
        visible = repo is not None and (
            not repo.private or (user is not None and user.can_write(repo.namespace)))
        if not visible:
            raise _HubError(404, "Repository not found", code="RepoNotFound")
        assert repo is not None
        if write and (user is None or not user.can_write(repo.namespace)):
            raise _HubError(403, "You don't have the rights to write to this repository")
        return repo

    @staticmethod
    def _resolve_rev(repo: _Repo, rev: str) -> str:
        rev = unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.commits:
            return rev
        raise _HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")

    # ----------------------------------------------------------------------------- handlers
    # Each handler gets (request, **path groups) and answers through request.send_json/send_bytes.
    def _whoami(self, req: _Handler) -> None:
        user = self._user(req.headers, required=True)
        assert user is not None
        req.send_json(200, {
            "type": "user", "name": user.name, "fullname": user.name,
            "orgs": [{"type": "org", "name": org} for org in user.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
        })

    def _create_repo(self, req: _Handler) -> None:
        user = self._user(req.headers, required=True)
        assert user is not None
        body = req.json_body()
        if body.get("type", "model") != "model":
            raise _HubError(400, "the loopback Hub serves model repositories only")
        namespace = body.get("organization") or user.name
        repo_id = f"{namespace}/{body['name']}"
        private = bool(body.get("private")) or body.get("visibility") == "private"
        with self._lock:
            if repo_id in self.repos:
                # the Hub's 409 carries the url: create_repo(exist_ok=True) returns it
                raise _HubError(409, "You already created this model repo",
                                body={"url": f"{self.url}/{repo_id}"})
            if not user.can_write(namespace):
                raise _HubError(403, f"You don't have the rights to create a model under the "
                                     f"namespace \"{namespace}\"")
            self._new_repo(repo_id, private=private)
        req.send_json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self, req: _Handler) -> None:
        self._user(req.headers, required=False)
        content = req.json_body().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, flags=re.DOTALL)
        errors: list[dict[str, str]] = []
        warnings: list[dict[str, str]] = []
        if match is None:
            warnings.append({"message": "empty or missing yaml metadata in repo card"})
        else:
            try:
                meta = yaml.safe_load(match.group(1)) or {}
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a mapping"})
                elif "model-index" in meta and not isinstance(meta["model-index"], list):
                    errors.append({"message": '"model-index" must be an array'})
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        req.send_json(400 if errors else 200, {"errors": errors, "warnings": warnings})

    def _preupload(self, req: _Handler, repo: str, rev: str) -> None:
        user = self._user(req.headers, required=True)
        with self._lock:
            hub_repo = self._repo(repo, user, write=True)
            files = hub_repo.commits[self._resolve_rev(hub_repo, rev)].files
            answer = []
            for item in req.json_body()["files"]:
                sample = base64.b64decode(item["sample"])
                lfs = self._wants_lfs(item["path"], sample, int(item["size"]))
                remote = files.get(item["path"])
                oid = None
                if remote is not None:
                    oid = remote.lfs_sha256 if remote.lfs_sha256 is not None else remote.git_oid
                answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                               "shouldIgnore": False, "oid": oid})
        req.send_json(200, {"files": answer, "commitOid": hub_repo.branches.get(unquote(rev))})

    def _lfs_batch(self, req: _Handler, repo: str) -> None:
        user = self._user(req.headers, required=True)
        body = req.json_body()
        with self._lock:
            self._repo(repo, user, write=True)
            if body.get("operation") != "upload":
                raise _HubError(400, "the loopback Hub accepts LFS uploads only")
            objects = []
            for obj in body["objects"]:
                entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in self.lfs_store:
                    entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
        req.send_json(200, {"transfer": "basic", "objects": objects},
                      content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, req: _Handler, oid: str) -> None:
        data = req.raw_body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(400, "uploaded content does not match its sha256")
        with self._lock:
            self.lfs_store[oid] = data
        req.send_bytes(200, b"")

    def _commit(self, req: _Handler, repo: str, rev: str) -> None:
        user = self._user(req.headers, required=True)
        lines = [json.loads(line) for line in req.raw_body().splitlines() if line.strip()]
        with self._lock:
            hub_repo = self._repo(repo, user, write=True)
            branch = unquote(rev)
            if branch not in hub_repo.branches:
                raise _HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
            files = dict(hub_repo.commits[hub_repo.branches[branch]].files)
            title = "commit"
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    title = value.get("summary") or title
                    parent = value.get("parentCommit")
                    if parent and parent != hub_repo.branches[branch]:
                        raise _HubError(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    content = base64.b64decode(value["content"])
                    files[value["path"]] = _File(size=len(content), git_oid=git_blob_oid(content),
                                                 content=content)
                elif key == "lfsFile":
                    sha256 = value["oid"]
                    if sha256 not in self.lfs_store:
                        raise _HubError(422, f"LFS object {sha256} was never uploaded")
                    size = len(self.lfs_store[sha256])
                    files[value["path"]] = _File(size=size, lfs_sha256=sha256,
                                                 git_oid=git_blob_oid(_lfs_pointer(sha256, size)))
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise _HubError(404, f"File not found: {value['path']}", code="EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(prefix)]:
                        del files[path]
                else:
                    raise _HubError(400, f"unsupported commit operation {key!r}")
            commit = self._add_commit(hub_repo, branch, title, files)
        req.send_json(200, {"success": True, "commitOid": commit.oid,
                            "commitUrl": f"{self.url}/{repo}/commit/{commit.oid}",
                            "pullRequestUrl": None})

    def _branch(self, req: _Handler, repo: str, rev: str) -> None:
        user = self._user(req.headers, required=True)
        body = req.json_body()
        with self._lock:
            hub_repo = self._repo(repo, user, write=True)
            branch = unquote(rev)
            if branch in hub_repo.branches:
                raise _HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = self._resolve_rev(hub_repo, body.get("startingPoint") or "main")
            hub_repo.branches[branch] = start
        req.send_json(200, {})

    def _model_info(self, req: _Handler, repo: str, rev: str | None = None) -> None:
        user = self._user(req.headers, required=False)
        with self._lock:
            hub_repo = self._repo(repo, user)
            commit = hub_repo.commits[self._resolve_rev(hub_repo, rev or "main")]
            card: dict[str, Any] = {}
            if "README.md" in commit.files:
                text = self._content(commit.files["README.md"]).decode()
                match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, flags=re.DOTALL)
                card = (yaml.safe_load(match.group(1)) or {}) if match else {}
        info = {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo,
            "author": hub_repo.namespace, "sha": commit.oid, "lastModified": _TIMESTAMP,
            "createdAt": _TIMESTAMP, "private": hub_repo.private, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "library_name": card.get("library_name"),
            "tags": list(card.get("tags") or []), "pipeline_tag": card.get("pipeline_tag"),
            "cardData": card or None, "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }
        req.send_json(200, info)

    def _tree_entries(self, commit: _Commit, paths: list[str] | None = None,
                      prefix: str = "", recursive: bool = True) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for path, entry in sorted(commit.files.items()):
            if paths is not None and path not in paths:
                continue
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            rest = path[len(prefix.rstrip("/") + "/"):] if prefix else path
            if not recursive and "/" in rest:
                folders.add((prefix.rstrip("/") + "/" if prefix else "") + rest.split("/", 1)[0])
                continue
            item: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size,
                                    "path": path}
            if entry.lfs_sha256 is not None:
                item["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size,
                               "pointerSize": len(_lfs_pointer(entry.lfs_sha256, entry.size))}
            entries.append(item)
        entries.extend({"type": "directory", "oid": git_blob_oid(f.encode()), "size": 0, "path": f}
                       for f in sorted(folders))
        return entries

    def _tree(self, req: _Handler, repo: str, rev: str, path: str | None = None) -> None:
        user = self._user(req.headers, required=False)
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        with self._lock:
            hub_repo = self._repo(repo, user)
            commit = hub_repo.commits[self._resolve_rev(hub_repo, rev)]
            prefix = unquote(path or "")
            if prefix and not any(p.startswith(prefix.rstrip("/") + "/") for p in commit.files):
                raise _HubError(404, f"Entry not found: {prefix}", code="EntryNotFound")
            entries = self._tree_entries(commit, prefix=prefix, recursive=recursive)
        req.send_json(200, entries)

    def _paths_info(self, req: _Handler, repo: str, rev: str) -> None:
        user = self._user(req.headers, required=False)
        body = req.raw_body()
        if req.headers.get("Content-Type", "").startswith("application/json"):
            paths = list(json.loads(body).get("paths", []))
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        with self._lock:
            hub_repo = self._repo(repo, user)
            commit = hub_repo.commits[self._resolve_rev(hub_repo, rev)]
            entries = self._tree_entries(commit, paths=paths)
        req.send_json(200, entries)

    def _resolve(self, req: _Handler, repo: str, rev: str, path: str) -> None:
        user = self._user(req.headers, required=False)
        with self._lock:
            hub_repo = self._repo(repo, user)
            commit_oid = self._resolve_rev(hub_repo, rev)
            entry = hub_repo.commits[commit_oid].files.get(unquote(path))
            if entry is None:
                raise _HubError(404, "Entry not found", code="EntryNotFound",
                                headers={"X-Repo-Commit": commit_oid})
            content = self._content(entry)
        headers = {"X-Repo-Commit": commit_oid, "ETag": f'"{entry.git_oid}"',
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if entry.lfs_sha256 is not None:
            headers["X-Linked-Etag"] = f'"{entry.lfs_sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        req.send_bytes(200, content, headers=headers)


class _Handler(BaseHTTPRequestHandler):
    """Dispatches to :class:`LoopbackHub`; one instance per request."""

    protocol_version = "HTTP/1.1"
    hub: LoopbackHub
    query: dict[str, list[str]]
    _body: bytes | None = None

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        self._body = None
        status = 500
        try:
            for method, pattern, handler in self.hub._routes:
                match = pattern.fullmatch(parts.path)
                if method == self.command and match is not None:
                    handler(self, **{k: v for k, v in match.groupdict().items() if v is not None})
                    status = self._status
                    break
            else:
                self.hub.unknown_requests.append(f"{self.command} {self.path}")
                raise _HubError(404, f"loopback Hub: no route for {self.command} {parts.path}")
        except _HubError as err:
            status = err.status
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self.raw_body()  # drain, so that a keep-alive connection stays in sync
            self.send_json(err.status, {"error": err.message, **err.body}, headers=headers)
        except Exception as exc:  # noqa: BLE001  (a bug in the server: answer 500, keep serving)
            self.send_json(500, {"error": f"loopback Hub crashed: {exc!r}"})
        finally:
            with self.hub._lock:
                self.hub.requests.append(RecordedRequest(self.command, parts.path, status))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def raw_body(self) -> bytes:
        """The request body (``Content-Length`` or chunked), read once."""
        if self._body is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self._body = b"".join(chunks)
        else:
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def json_body(self) -> dict[str, Any]:
        data = self.raw_body()
        return json.loads(data) if data else {}

    def send_bytes(self, status: int, payload: bytes, *, headers: dict[str, str] | None = None) -> None:
        self._status = status
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_json(self, status: int, payload: Any, *, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
        self.send_bytes(status, json.dumps(payload).encode(),
                        headers={"Content-Type": content_type, **(headers or {})})

