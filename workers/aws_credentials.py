"""AWS credentials for Bedrock: the usual chain, resolved and refreshed off the event loop.

Keys in the worker's environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) are used as they are. Otherwise botocore resolves the chain every AWS
SDK follows: the profile's entry in the shared credentials and config files
(``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``, ``~/.aws``), assumed roles, SSO,
``credential_process``, web identity, container and instance credentials. botocore does file
reads and HTTP calls for that, blocking: it runs in a thread, bounded, and only when there is
no set yet or botocore says the temporary set it gave is due for a refresh. Concurrent
callers share one resolution.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from workers.aws_sigv4 import AwsCredentials
from workers.errors import ErrorKind, ProviderError

__all__ = ["RESOLVE_TIMEOUT_S", "AwsCredentialChain", "profile_region"]

#: The longest a resolution may take (instance metadata and STS calls included).
RESOLVE_TIMEOUT_S = 30.0


def _session(profile: str, environ: Mapping[str, str]) -> Any:
    """A botocore session reading the files and profile ``environ`` names."""
    import botocore.session  # noqa: PLC0415  (100 ms of imports: Bedrock workers only)

    session = botocore.session.Session(profile=profile or None)
    for variable, name in (
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials_file"),
        ("AWS_CONFIG_FILE", "config_file"),
    ):
        if environ.get(variable):
            session.set_config_variable(name, environ[variable])
    return session


def profile_region(profile: str, environ: Mapping[str, str]) -> str:
    """The region the profile's config names (``""`` when none or no such profile)."""
    import botocore.exceptions  # noqa: PLC0415

    try:
        return str(_session(profile, environ).get_config_variable("region") or "")
    except botocore.exceptions.BotoCoreError:
        return ""


class AwsCredentialChain:
    """Credentials for one provider.

    Args:
        provider: the provider's name, for errors.
        profile: the profile to read (``""``: ``AWS_PROFILE``, else ``default``).
        environ: the worker's environment.
        timeout_s: the bound of one resolution.
    """

    def __init__(
        self,
        provider: str,
        profile: str,
        environ: Mapping[str, str],
        *,
        timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        self._provider = provider
        self._profile = profile or environ.get("AWS_PROFILE", "")
        self._environ = environ
        self._timeout = timeout_s
        self._source: Any = None  # botocore's Credentials, refreshable or not
        self._frozen: AwsCredentials | None = None
        self._resolution: asyncio.Future[AwsCredentials] | None = None
        key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret and not profile:
            self._frozen = AwsCredentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)

    async def get(self) -> AwsCredentials:
        """The credentials to sign the next call with.

        Raises:
            ProviderError: ``authentication`` when the chain finds none or refuses the
                profile; ``timeout`` when resolving took too long.
        """
        if self._frozen is not None and not self._due():
            return self._frozen
        if self._resolution is None:
            loop = asyncio.get_running_loop()
            self._resolution = loop.create_task(self._resolve())
            self._resolution.add_done_callback(self._resolved)
        return await asyncio.shield(self._resolution)

    def _due(self) -> bool:
        refresh_needed = getattr(self._source, "refresh_needed", None)
        return bool(refresh_needed is not None and refresh_needed())

    def _resolved(self, task: asyncio.Future[AwsCredentials]) -> None:
        self._resolution = None
        if not task.cancelled():
            task.exception()  # retrieved: a failure is raised to the callers that waited

    async def _resolve(self) -> AwsCredentials:
        try:
            async with asyncio.timeout(self._timeout):
                frozen = await asyncio.to_thread(self._freeze)
        except TimeoutError as exc:
            raise ProviderError(
                self._provider, ErrorKind.TIMEOUT, "resolving AWS credentials timed out"
            ) from exc
        self._frozen = frozen
        return frozen

    def _freeze(self) -> AwsCredentials:
        """In a thread: resolve the chain (once), then freeze the current set."""
        import botocore.exceptions  # noqa: PLC0415

        try:
            if self._source is None:
                self._source = _session(self._profile, self._environ).get_credentials()
            if self._source is None:
                raise ProviderError(
                    self._provider, ErrorKind.AUTHENTICATION, "no AWS credentials found"
                )
            frozen = self._source.get_frozen_credentials()
        except botocore.exceptions.BotoCoreError as exc:
            raise ProviderError(
                self._provider, ErrorKind.AUTHENTICATION, f"AWS credentials: {exc}"
            ) from exc
        return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token or None)
