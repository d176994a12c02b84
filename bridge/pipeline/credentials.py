"""The worker's own Kordiam credentials: checked at start-up, and a fault of the whole worker when refused."""

from __future__ import annotations

import asyncio
import time

import structlog

from bridge.errors import ConfigError, KordiamCredentialsRefused, KordiamRejected
from bridge.kordiam.client import KordiamClient
from bridge.ops import metrics
from bridge.queue.gate import ReceiveGate
from bridge.retry import RetryPolicy

log = structlog.get_logger("bridge.credentials")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
# One quick attempt at start-up: an unreachable Kordiam must not hold the start for the client's whole budget.
START_UP_CHECK = RetryPolicy(attempts=1)


class KordiamCredentials:
    """Keeps the consumer's gate closed while the worker holds no working Kordiam token.

    At start-up (``check_at_start``) refused credentials are a configuration error naming ``kordiam.client_secret``
    (a base URL with no token endpoint, ``kordiam.base_url``); an unreachable Kordiam is not (it may come back): the
    worker starts with the gate closed, not ready, and takes messages once a token works. At run time a refusal met
    by any message (``refused``: the secret was rotated under the worker) closes the gate, counts
    ``bridge_kordiam_auth_failures_total``, logs ``kordiam_credentials_refused`` at error level, and retries the
    token with back-off (``FIRST_RETRY_SECONDS`` doubling to ``MAX_RETRY_SECONDS``) until one works; then the gate
    opens by itself. The messages that met the refusal wait in hand and run again (``wait_usable``), so none is
    dead-lettered for it and none spends another receive.
    """

    def __init__(self, kordiam: KordiamClient, gate: ReceiveGate) -> None:
        self._kordiam = kordiam
        self._gate = gate
        self._probe: asyncio.Task[None] | None = None
        self._delay = FIRST_RETRY_SECONDS
        self._opened_at = 0.0

    async def check_at_start(self) -> None:
        try:
            await self._kordiam.check_credentials(retry=START_UP_CHECK)
        except KordiamCredentialsRefused as refused:
            raise ConfigError("kordiam.client_secret", f"{refused} (check kordiam.client_id and the secret)") from None
        except KordiamRejected as rejected:
            raise ConfigError("kordiam.base_url", f"no Kordiam token endpoint there: {rejected}") from None
        except Exception as error:  # unreachable, or an answer it does not understand: not the config's fault
            self._close(f"Kordiam not reachable at start-up: {type(error).__name__}: {error}")
            log.warning("kordiam_unreachable_at_start", error=f"{type(error).__name__}: {error}", retry_in=self._delay)

    async def wait_usable(self) -> None:
        """Return at once while a token works; otherwise when one works again."""
        await self._gate.wait_open()

    def refused(self, error: KordiamCredentialsRefused) -> None:
        """A message met a refusal of the worker's credentials: pause the worker until a token works."""
        metrics.KORDIAM_AUTH_FAILURES.inc()
        if self._gate.reason is None:
            # A refusal soon after the last one healed: keep backing off rather than start again at one second.
            if time.monotonic() - self._opened_at > MAX_RETRY_SECONDS:
                self._delay = FIRST_RETRY_SECONDS
            log.error(
                "kordiam_credentials_refused",
                error=str(error),
                hint="the worker takes no messages until Kordiam accepts kordiam.client_id/client_secret again; "
                "messages wait in the queue",
                retry_in=round(self._delay, 1),
            )
        self._close(f"Kordiam refuses the client credentials: {error}")

    async def aclose(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)

    def _close(self, reason: str) -> None:
        self._gate.close(reason)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._retry_token(), name="kordiam-credentials")

    async def _retry_token(self) -> None:
        paused_at = time.monotonic()
        while True:
            await asyncio.sleep(self._delay)
            self._delay = min(MAX_RETRY_SECONDS, self._delay * 2)
            try:
                await self._kordiam.check_credentials(retry=START_UP_CHECK)
            except KordiamCredentialsRefused as refused:
                metrics.KORDIAM_AUTH_FAILURES.inc()
                self._gate.close(f"Kordiam refuses the client credentials: {refused}")
                log.error("kordiam_credentials_still_refused", error=str(refused), retry_in=round(self._delay, 1))
            except Exception as error:
                log.warning(
                    "kordiam_token_retry_failed", error=f"{type(error).__name__}: {error}", retry_in=self._delay
                )
            else:
                break
        self._opened_at = time.monotonic()
        self._gate.open()
        log.warning(
            "consumer_resumed",
            reason="Kordiam accepted the client credentials",
            paused_seconds=round(self._opened_at - paused_at, 1),
        )
