"""The worker's own Kordiam credentials: checked at start-up, and a fault of the whole worker when refused."""

from __future__ import annotations

import structlog

from bridge.errors import ConfigError, KordiamCredentialsRefused, KordiamRedirected, KordiamRejected, TransientError
from bridge.kordiam.client import ONE_ATTEMPT, KordiamClient
from bridge.ops import metrics
from bridge.pipeline.pause import WorkerPause
from bridge.queue.gate import ReceiveGate

log = structlog.get_logger("bridge.credentials")


class UnconfirmedRefusal(TransientError):
    """A 401 even with a fresh token that the credentials probe does not reproduce. A 401 speaks of the token, never of
    one element (Kordiam answers 403 or 404 for that), so this is a token that raced (another replica's grant may
    invalidate it, reference §3.2), not the message's fault: retried, and dead-lettered with its reason only once
    its receives are spent."""

    def __init__(self, refused: KordiamCredentialsRefused) -> None:
        super().__init__(f"{refused} (Kordiam accepts the credentials otherwise: retried)")


class KordiamCredentials(WorkerPause):
    """Keeps the consumer's gate closed while the worker holds no working Kordiam token.

    At start-up (``check_at_start``) refused credentials are a configuration error naming ``kordiam.client_secret``
    (a base URL with no token endpoint, or one that redirects, ``kordiam.base_url``); an unreachable Kordiam is not
    (it may come back): the worker starts with the gate closed, not ready, and takes messages once a token works. At
    run time a refusal met by a message (a 401 even with a fresh token) is confirmed first (``confirm``: a fresh
    token and a request any worker may make, one probe shared by every message that asks meanwhile). Confirmed (the
    secret was rotated under the worker), it closes the gate, counts ``bridge_kordiam_auth_failures_total``, logs
    ``kordiam_credentials_refused`` at error level, and retries with back-off
    (``bridge.pipeline.pause.WorkerPause``) until the probe passes; then the gate opens by itself. The messages that
    met the refusal wait in hand and run again, so none is dead-lettered for it and none spends another receive. Not
    confirmed, the refusal was that message's request's alone: an ``UnconfirmedRefusal`` (the handler's), retried
    and dead-lettered with its reason once the message's receives are spent (before, it paused the worker again on
    every receive).
    """

    name = "kordiam-credentials"
    healed = "Kordiam accepted the client credentials"

    def __init__(self, kordiam: KordiamClient, gate: ReceiveGate) -> None:
        super().__init__(gate)
        self._kordiam = kordiam

    async def check_at_start(self) -> None:
        try:
            # One quick attempt, here and per probe: an unreachable Kordiam must not hold either for the client's
            # whole retry budget.
            await self._kordiam.check_credentials(retry=ONE_ATTEMPT)
        except KordiamCredentialsRefused as refused:
            raise ConfigError("kordiam.client_secret", f"{refused} (check kordiam.client_id and the secret)") from None
        except (KordiamRejected, KordiamRedirected) as rejected:
            raise ConfigError("kordiam.base_url", f"no Kordiam token endpoint there: {rejected}") from None
        except Exception as error:  # unreachable, or an answer it does not understand: not the config's fault
            self.pause(f"Kordiam not reachable at start-up: {type(error).__name__}: {error}")
            log.warning(
                "kordiam_unreachable_at_start", error=f"{type(error).__name__}: {error}", retry_in=self.retry_in
            )

    def _paused_by(self, error: BaseException, reason: str) -> None:
        metrics.KORDIAM_AUTH_FAILURES.inc()
        log.error(
            "kordiam_credentials_refused",
            error=reason,
            met_by=f"{type(error).__name__}: {error}",
            hint="the worker takes no messages until Kordiam accepts kordiam.client_id/client_secret again; "
            "messages wait in the queue",
            retry_in=self.retry_in,
        )

    async def _probe(self) -> str | None:
        """A fresh token, then a request every worker may make with it (``GET /platforms``): a refusal of either
        is the credentials'. So a 401 that only one element's request meets is that element's, not the worker's."""
        try:
            await self._kordiam.check_credentials(retry=ONE_ATTEMPT)
            await self._kordiam.check_access()
        except KordiamCredentialsRefused as refused:
            metrics.KORDIAM_AUTH_FAILURES.inc()
            if self.paused:
                log.error("kordiam_credentials_still_refused", error=str(refused), retry_in=self.retry_in)
            return f"Kordiam refuses the client credentials: {refused}"
        except Exception as error:
            log.warning("kordiam_token_retry_failed", error=f"{type(error).__name__}: {error}", retry_in=self.retry_in)
            return self._reason or f"Kordiam could not be asked about the credentials: {type(error).__name__}: {error}"
        return None
