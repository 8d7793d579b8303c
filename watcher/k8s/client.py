"""One Kubernetes API client for the daemon, or a single line saying why there is none.

In a pod with a service account it uses the in-cluster config; elsewhere an explicit
kubeconfig, ``$KUBECONFIG`` or ``~/.kube/config``. Without any, pod attribution,
Kubernetes events and the node condition are off and the daemon carries on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from kubernetes.aio.client import ApiClient

__all__ = ["SERVICE_ACCOUNT_DIR", "close_kubernetes", "connect_kubernetes", "kubeconfig_contexts"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
NODE_FEATURES_OFF = "pod attribution, Kubernetes events and node conditions are off"

log = structlog.get_logger("watcher.k8s.client")


def _kubeconfig_path(
    explicit: Path | None, environ: Mapping[str, str], home: Path | None
) -> Path | None:
    """The kubeconfig to load: explicit, then the first file in $KUBECONFIG, then ~/.kube."""
    if explicit is not None:
        return explicit
    for entry in environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).expanduser().is_file():
            return Path(entry).expanduser()
    default = (home or Path.home()) / ".kube" / "config"
    return default if default.is_file() else None


def kubeconfig_contexts(
    kubeconfig: Path | None, *, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> list[str] | None:
    """The context names of the kubeconfig :func:`connect_kubernetes` would load, in its
    order; None when there is no kubeconfig, ``ValueError`` when it cannot be read."""
    from kubernetes.aio.config.kube_config import list_kube_config_contexts

    env = os.environ if environ is None else environ
    path = _kubeconfig_path(kubeconfig, env, home)
    if path is None:
        return None
    try:
        contexts, _ = list_kube_config_contexts(str(path))  # type: ignore[no-untyped-call]
    except Exception as e:  # the library's ConfigException, YAML errors, OSError
        raise ValueError(f"kubeconfig {path} cannot be read: {e}") from e
    return [str(c["name"]) for c in contexts or ()]


async def connect_kubernetes(
    kubeconfig: Path | None,
    *,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    home: Path | None = None,
    off: str = NODE_FEATURES_OFF,
) -> ApiClient | None:
    """A ``kubernetes.aio`` ``ApiClient`` the caller must ``await close()``, or None.

    An explicit ``kubeconfig`` or ``context`` (a kubeconfig context; default its current one)
    wins over the in-cluster service account. Failure to load
    is logged once (``k8s_unavailable``, ending with ``off``: what the caller does without
    a cluster) and answered with None, never raised.
    """
    # Imported here: the library costs ~0.2 s to load, and most commands never connect.
    from kubernetes.aio import client, config
    from kubernetes.aio.config.incluster_config import InClusterConfigLoader

    env = os.environ if environ is None else environ
    token = service_account_dir / "token"
    cfg = client.Configuration()
    explicit = kubeconfig is not None or context is not None
    if not explicit and env.get("KUBERNETES_SERVICE_HOST") and token.is_file():
        try:
            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]  # untyped library
                str(token), str(service_account_dir / "ca.crt"), environ=env
            )
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call]  # untyped library
            api = client.ApiClient(configuration=cfg)  # reads the CA file
        except Exception as e:  # any config error means "off", said once
            log.warning("k8s_unavailable", reason=f"in-cluster config failed: {e}; {off}")
            return None
        log.info("k8s_connected", via="in-cluster", host=cfg.host)
        return api
    path = _kubeconfig_path(kubeconfig, env, home)
    if path is None:
        log.warning(
            "k8s_unavailable", reason=f"no in-cluster service account and no kubeconfig: {off}"
        )
        return None
    try:
        loader = await config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped
            config_file=str(path), context=context, client_configuration=cfg
        )
        _renew_exec_tokens(loader, cfg)
        api = client.ApiClient(configuration=cfg)
    except Exception as e:
        log.warning(
            "k8s_unavailable",
            reason=f"kubeconfig {path} failed to load: {e}; {off}",
            path=str(path),
        )
        return None
    log.info("k8s_connected", via="kubeconfig", path=str(path), host=cfg.host)
    return api


def _renew_exec_tokens(loader: Any, cfg: Any) -> None:
    """An exec plugin's token expires (``aws eks get-token``: 15 minutes): when it has, the
    next request runs the plugin again. The library only does this in a loop of its own."""
    if getattr(loader, "exec_plugin_expiry", None) is None:
        return  # no exec plugin, or a token that does not expire

    async def renew(configuration: Any) -> None:
        await loader.load_from_exec_plugin()  # at once while the token is still fresh
        configuration.api_key["BearerToken"] = loader.token

    cfg.refresh_api_key_hook = renew


async def close_kubernetes(api: ApiClient) -> None:
    """Close the client's HTTP session (typed wrapper: the library's ``close`` is not)."""
    await api.close()  # type: ignore[no-untyped-call]  # untyped library
