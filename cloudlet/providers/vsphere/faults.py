"""vSphere faults to the engine's two kinds of failure: retry, or give up.

The engine retries transient errors with backoff and reports permanent ones
at once, so the split decides whether a sync heals by itself: a busy object,
a name race or a dropped connection is transient; a bad argument, a missing
permission or an exhausted quota would fail the same way forever.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from cloudlet.errors import ProviderError
from cloudlet.providers.vsphere.sdk import vim, vmodl

#: Worth a retry: the same call may well succeed a moment later.
TRANSIENT: tuple[type, ...] = (
    vim.fault.DuplicateName,  # a concurrent create won the name; the retry adopts it
    vim.fault.InvalidState,  # includes InvalidPowerState: an object mid-transition
    vim.fault.TaskInProgress,
    vim.fault.ConcurrentAccess,
    vim.fault.ResourceInUse,
    vim.fault.Timedout,
    vim.fault.HostConnectFault,
    vim.fault.NotAuthenticated,  # an expired session: the provider logs in again
    vmodl.fault.HostCommunication,
    vmodl.fault.SystemError,
    vmodl.fault.RequestCanceled,
)
# Every other fault is permanent: a bad argument, a missing permission (a
# NotAuthenticated is a NoPermission, but TRANSIENT names it), exhausted
# resources, an invalid name or login, an object that is not there.
#: The object does not exist (any more): success for a delete.
GONE: tuple[type, ...] = (vmodl.fault.ManagedObjectNotFound, vim.fault.NotFound)
#: The connection broke (the simulator drops it on a server-side panic, too).
CONNECTION: tuple[type, ...] = (OSError, http.client.HTTPException)


def is_gone(err: BaseException) -> bool:
    return isinstance(err, GONE)


def fault_name(fault: BaseException) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1]


def to_provider_error(what: str, err: BaseException) -> ProviderError:
    """One message per failure, with the fault's name and text but no credential."""
    if isinstance(err, ProviderError):
        return err
    if isinstance(err, vmodl.MethodFault):
        detail = getattr(err, "msg", "") or ""
        text = f"{what}: {fault_name(err)}" + (f" ({detail})" if detail else "")
        return ProviderError(text, transient=isinstance(err, TRANSIENT))
    if isinstance(err, ssl.SSLCertVerificationError):
        return ProviderError(
            f"{what}: vCenter's TLS certificate is not trusted ({err.verify_message}); "
            "give its CA with VSPHERE_CA_FILE, or set VSPHERE_INSECURE=1",
            transient=False,
        )
    if isinstance(err, CONNECTION):
        return ProviderError(
            f"{what}: vCenter connection failed ({fault_name(err)})", transient=True
        )
    return ProviderError(f"{what}: {fault_name(err)}: {err}", transient=False)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise SDK and socket errors as ``ProviderError``; never leak pyVmomi types."""
    try:
        yield
    except (vmodl.MethodFault, *CONNECTION) as err:
        raise to_provider_error(what, err) from err


def permanent(message: str) -> ProviderError:
    return ProviderError(message, transient=False)


def conflict(message: str) -> ProviderError:
    """Refused for now because something still uses the object: retry later."""
    return ProviderError(message, transient=True)
