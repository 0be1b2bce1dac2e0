"""Reaching a checkpoint on the Hugging Face hub or on disk, for every family: the quick
offline probe, the config, and errors that say what to do without network access."""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from lookalike.export.errors import ModelUnavailableError, UnsupportedModelError

__all__ = ["HubAccess", "download_files", "first_line", "hub_unreachable_reason", "load_config"]

HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_VALUES = ("1", "on", "yes", "true")
LOCAL_LAYOUT = (
    "expected config.json and weights saved by `save_pretrained` (CLIPModel, SiglipModel) "
    "or a Hugging Face hub snapshot"
)


def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be reached now, or None when it can.

    One quick TCP connect instead of the hub client's retries with backoff (~35 s before it
    gives up). `HF_HUB_OFFLINE` is read now, not at import time.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    if endpoint.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return None  # reached through a proxy: a direct connect proves nothing
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


class HubAccess:
    """Where one checkpoint is read from: a hub id (cache only, when the hub is unreachable)
    or a local directory."""

    def __init__(self, name: str, *, revision: str | None, kind: str) -> None:
        self.name, self.revision, self.kind = name, revision, kind
        self.offline = hub_unreachable_reason() if kind == "hub" else None
        self.local_only = kind == "local" or self.offline is not None

    def options(self) -> dict[str, Any]:
        """The keyword arguments of every `from_pretrained` call for this checkpoint."""
        return {"revision": self.revision, "local_files_only": self.local_only}


def load_config(access: HubAccess) -> Any:
    name = access.name
    if access.kind == "local" and not (Path(name) / "config.json").is_file():
        # AutoConfig would guess a model type from the directory's *name*.
        raise ModelUnavailableError(f"{name} holds no model: {LOCAL_LAYOUT}")
    try:
        return AutoConfig.from_pretrained(name, **access.options())
    except ValueError as exc:  # config.json present but its model_type is unknown
        raise UnsupportedModelError(
            f"{name} is not a model Lookalike knows: {first_line(exc)}"
        ) from exc
    except OSError as exc:
        if access.kind == "local":
            raise ModelUnavailableError(f"{name} holds no model: {LOCAL_LAYOUT}") from exc
        reason = (
            f"the Hugging Face hub is unreachable ({access.offline}) and {name!r} is not in the "
            "local cache"
            if access.offline
            else f"could not load {name!r} from the Hugging Face hub: {first_line(exc)}"
        )
        raise ModelUnavailableError(
            f"{reason}\n"
            "Without network access, pass a local directory with a saved model "
            "(--model /path/to/model) or build random weights (--random-init vit-b-32)."
        ) from exc


def download_files(access: HubAccess, required: str, *, any_of: tuple[str, ...], what: str) -> Path:
    """The folder holding a hub repository's `required` file and the first of `any_of` it has
    (from the cache only when the hub is unreachable)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    def fetch(filename: str) -> Path:
        return Path(
            hf_hub_download(
                access.name,
                filename,
                revision=access.revision,
                local_files_only=access.local_only,
            )
        )

    try:
        config = fetch(required)
        for name in any_of:
            try:
                fetch(name)
                return config.parent
            except EntryNotFoundError:
                continue
    except (OSError, ValueError) as exc:
        reason = (
            f"the Hugging Face hub is unreachable ({access.offline}) and it is not in the "
            "local cache"
            if access.offline
            else first_line(exc)
        )
        raise ModelUnavailableError(f"could not load {what} {access.name!r}: {reason}") from exc
    raise ModelUnavailableError(f"{access.name} has {required} but none of {', '.join(any_of)}")


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
