"""The loopback Hub answers huggingface_hub's own client the way the Hub does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session


def test_whoami_accepts_the_fake_token_only(hub) -> None:
    assert HfApi().whoami(token=hub.TOKEN)["name"] == "loopback-user"
    with pytest.raises(HfHubHTTPError) as info:
        HfApi().whoami(token="hf_wrong")
    assert info.value.response.status_code == 401
    assert get_session().get(f"{hub.url}/api/whoami-v2").status_code == 401  # no token at all


def test_commit_regular_and_lfs_files_then_download(hub, tmp_path: Path) -> None:
    api = HfApi()
    url = api.create_repo("loopback-user/roundtrip", exist_ok=True)
    assert url.repo_id == "loopback-user/roundtrip"
    weights = bytes(range(256)) * 64  # binary -> LFS
    info = api.create_commit(
        "loopback-user/roundtrip",
        operations=[CommitOperationAdd("weights.bin", weights),
                    CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# hi\n")],
        commit_message="add files",
    )
    assert info.oid == hub.head("loopback-user/roundtrip") and len(info.oid) == 40
    assert hashlib.sha256(weights).hexdigest() in hub.lfs_store  # went through the LFS batch API

    path = hf_hub_download("loopback-user/roundtrip", "weights.bin")
    assert Path(path).read_bytes() == weights
    assert f"snapshots/{info.oid}/" in Path(path).as_posix()  # cached under the real commit id
    files = {f.path: f for f in api.list_repo_tree("loopback-user/roundtrip", recursive=True)}
    assert files["weights.bin"].lfs is not None and files["README.md"].lfs is None
    model = api.model_info("loopback-user/roundtrip")
    assert model.sha == info.oid and model.card_data["license"] == "mit"
    assert [p.path for p in api.get_paths_info("loopback-user/roundtrip", ["README.md"])] == [
        "README.md"]

    # re-committing unchanged content is skipped by the client thanks to the preupload oids
    api.create_commit("loopback-user/roundtrip", commit_message="same",
                      operations=[CommitOperationAdd("weights.bin", weights)])
    assert hub.head("loopback-user/roundtrip") == info.oid
    api.create_commit("loopback-user/roundtrip", commit_message="rm",
                      operations=[CommitOperationDelete("weights.bin")])
    assert "weights.bin" not in api.list_repo_files("loopback-user/roundtrip")
    # the old revision is still there
    old = hf_hub_download("loopback-user/roundtrip", "weights.bin", revision=info.oid,
                          cache_dir=tmp_path / "other_cache")
    assert Path(old).read_bytes() == weights


def test_unknown_repo_file_and_revision_are_404(hub) -> None:
    hub.seed_repo("loopback-user/exists", files={"a.txt": b"a"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("loopback-user/missing", "a.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("loopback-user/exists", "b.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("loopback-user/exists", "a.txt", revision="nope")


def test_private_repos_are_invisible_to_others(hub) -> None:
    hub.seed_repo("other-user/secret", private=True, files={"a.txt": b"a"})
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("other-user/secret")
    assert HfApi().model_info("other-user/secret", token=hub.OTHER_TOKEN).private
    with pytest.raises(HfHubHTTPError) as info:
        HfApi().create_repo("other-user/new")
    assert info.value.response.status_code == 403
