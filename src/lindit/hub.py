"""The one place lindit reaches the Hugging Face Hub: bounded in time, said out loud, one line on failure.

Every model lindit fetches by hub id (a teacher for ``convert``/``distill``, a base pipeline or model for
``generate``/``eval``, a lindit student for ``lindit.load``) is loaded inside ``hub_access``::

    from lindit.hub import hub_access

    with hub_access("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", "teacher", filename="config.json",
                    subfolder="transformer"):
        model = AutoModel.from_pretrained(repo_id, subfolder="transformer")

Before the block runs, one HEAD request for ``subfolder/filename`` checks that the Hub answers within
``HF_HUB_ETAG_TIMEOUT`` seconds (default 10), without retries: with no network, or behind a proxy that
never answers, the command fails within that time instead of hanging for minutes. Then it prints what is
being fetched and from where (stderr), and inside the block every Hub or network error becomes one
``UserError`` line naming the repository, the endpoint and the way out (a local folder, or
``HF_HUB_OFFLINE=1`` to use files already in the cache). Downloads themselves keep huggingface_hub's own
``HF_HUB_DOWNLOAD_TIMEOUT`` per request. With ``HF_HUB_OFFLINE=1`` no request is made at all.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

DEFAULT_TIMEOUT_S = 10.0


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` can be a hub repository id (``owner/name``) rather than a local path."""
    if not spec or spec.startswith((".", "/", "~")) or spec.count("/") != 1 or Path(spec).exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def timeout_s() -> float:
    """Seconds to wait for the Hub to answer: ``HF_HUB_ETAG_TIMEOUT`` if set, else 10."""
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise UserError(f"HF_HUB_ETAG_TIMEOUT must be a number of seconds, got {os.environ['HF_HUB_ETAG_TIMEOUT']!r}") from None


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextmanager
def hub_access(repo_id: str, what: str, filename: str = "config.json", subfolder: str | None = None):
    """Run the block that loads ``repo_id`` from the Hub, after checking that the Hub answers (see module).

    what: words for the messages ("teacher", "base pipeline", "lindit model"). filename and subfolder: a
    file the repository must hold (the config the loader reads first); a repository without it is refused
    before any download.
    """
    if not offline():
        probe(repo_id, what, filename, subfolder)
        print(f"lindit: fetching {what} {repo_id} from {endpoint()} (HF_HUB_OFFLINE=1 uses the local cache only)",
              file=sys.stderr)
    try:
        with warnings.catch_warnings():  # diffusers 0.42 passes an argument huggingface_hub deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    except Exception as err:  # noqa: BLE001 -- only Hub and network errors are translated
        line = describe(err, repo_id, what)
        if line is None:
            raise
        raise UserError(line) from err


def probe(repo_id: str, what: str, filename: str = "config.json", subfolder: str | None = None) -> None:
    """One HEAD request for ``subfolder/filename`` of ``repo_id``, no retries; UserError if it fails."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, filename, subfolder=subfolder, endpoint=endpoint())
    try:
        get_hf_file_metadata(url, timeout=timeout_s(), retry_on_errors=False)
    except Exception as err:  # noqa: BLE001
        line = describe(err, repo_id, what, filename=f"{subfolder}/{filename}" if subfolder else filename)
        if line is None:
            raise
        raise UserError(line) from None


def has_file(repo_id: str, filename: str, what: str) -> bool:
    """Whether ``repo_id`` holds ``filename`` (one HEAD request, bounded like ``probe``; the local cache
    when offline). A repository that lacks it is False; any other Hub or network error is a UserError."""
    from huggingface_hub import errors, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if offline():
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, endpoint=endpoint()), timeout=timeout_s(),
                             retry_on_errors=False)
        return True
    except errors.RemoteEntryNotFoundError:
        return False
    except Exception as err:  # noqa: BLE001
        line = describe(err, repo_id, what, filename=filename)
        if line is None:
            raise
        raise UserError(line) from None


def describe(err: BaseException, repo_id: str, what: str, filename: str | None = None) -> str | None:
    """One line for a Hub or network error, or None if ``err`` is neither."""
    from huggingface_hub import errors

    where = f"{what} {repo_id!r} from the Hugging Face Hub ({endpoint()})"
    if isinstance(err, OSError) and not err.errno and offline():
        return (f"{what} {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                "download it once with network access, or give a local folder")
    if isinstance(err, errors.GatedRepoError):
        return f"cannot fetch {where}: the repository is gated; accept its terms on the Hub and log in (hf auth login)"
    if isinstance(err, errors.RepositoryNotFoundError):
        return (f"cannot fetch {where}: no such repository (or it is private: log in with hf auth login); "
                "for a local model give its folder path")
    if isinstance(err, (errors.RemoteEntryNotFoundError, errors.RevisionNotFoundError)):
        return f"cannot fetch {where}: the repository has no {filename or 'such file'}; is it a diffusers model?"
    if isinstance(err, _network_errors()) or (isinstance(err, OSError) and not err.errno):
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        if isinstance(err, TimeoutError) or "timeout" in type(err).__name__.lower() or "timed out" in reason:
            reason = f"no answer within {timeout_s():g} s (HF_HUB_ETAG_TIMEOUT)"
        return (f"cannot fetch {where}: {reason}; give a local folder, or set HF_HUB_OFFLINE=1 to use files "
                "already in the cache")
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of whichever HTTP client huggingface_hub uses."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests.exceptions", "ConnectionError"), ("requests.exceptions", "Timeout")):
        if module.split(".")[0] in sys.modules:
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)
