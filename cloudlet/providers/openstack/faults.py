"""openstacksdk errors to the engine's two kinds of failure: retry, or give up.

A 409 is usually an object still in use (a network with ports, a router
with interfaces) or a race, which a retry resolves; but Neutron also answers
409 for an exhausted quota, which never heals by itself. Nova says 403 for
its quota. 5xx and dropped connections are transient; 400s, a missing
permission and bad credentials are permanent. A 404 is mapped by the caller:
success for a delete, a permanent "not found" for an update.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from cloudlet.errors import ProviderError

_QUOTA_WORDS = ("quota", "overquota", "limit exceeded")


def is_gone(err: BaseException) -> bool:
    return isinstance(err, sdk.NotFoundException) or (
        isinstance(err, ProviderError) and "not found" in str(err) and not err.transient
    )


def _detail(err: sdk.HttpException) -> str:
    text = (err.details or err.message or "").strip()
    return text.split("\n", 1)[0][:300]


def to_provider_error(what: str, err: BaseException) -> ProviderError:
    """One line per failure with the cloud's reason; never a credential."""
    if isinstance(err, ProviderError):
        return err
    if isinstance(err, sdk.HttpException):
        status = err.status_code or 0
        detail = _detail(err)
        quota = any(w in detail.lower() for w in _QUOTA_WORDS)
        transient = (status == 409 and not quota) or status >= 500 or status == 429
        return ProviderError(f"{what}: HTTP {status}: {detail}", transient=transient)
    if isinstance(err, ksa.Unauthorized | ksa.AuthorizationFailure):
        return ProviderError(
            f"{what}: authentication failed ({type(err).__name__})", transient=False
        )
    if isinstance(err, ksa.MissingRequiredOptions | sdk.ConfigException):
        return ProviderError(f"{what}: OpenStack configuration: {err}", transient=False)
    if isinstance(err, ksa.ConnectionError | ksa.RetriableConnectionFailure | OSError):
        return ProviderError(
            f"{what}: connection to OpenStack failed ({type(err).__name__})", transient=True
        )
    if isinstance(err, sdk.ResourceTimeout):
        return ProviderError(f"{what}: timed out: {err}", transient=True)
    return ProviderError(f"{what}: {type(err).__name__}: {err}", transient=False)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise SDK and socket errors as ``ProviderError``; never leak SDK types."""
    try:
        yield
    except ProviderError:
        raise
    except (sdk.SDKException, ksa.ClientException, OSError) as err:
        raise to_provider_error(what, err) from err


def permanent(message: str) -> ProviderError:
    return ProviderError(message, transient=False)


def transient(message: str) -> ProviderError:
    return ProviderError(message, transient=True)
