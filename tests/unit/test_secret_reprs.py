"""Objects that hold a secret do not show it in their repr: a traceback with locals, a debug log line or an
f-string of one of them must not write the secret out."""

from __future__ import annotations

import pytest

from bridge.channels.auth import Credentials, _Token
from bridge.ingress.auth import BearerTokenCheck, HeaderValuesCheck, JwtTokenCheck, KeyExchange, TokenIssuer
from bridge.kordiam.models import Token

HOLDERS = [
    BearerTokenCheck("bearer-SECRET"),
    JwtTokenCheck("jwt-SECRET", "kordiam", None, True),
    KeyExchange("the-key", "api-SECRET", TokenIssuer("issuer-SECRET", 60, "platform")),
    HeaderValuesCheck((("X-Api-Key", "header-SECRET"),)),
    Credentials({"Authorization": "Bearer credentials-SECRET"}, renewable=True),
    _Token("token-SECRET", 1.0),
    Token(access_token="access-SECRET", refresh_token="refresh-SECRET", expires_in=60),
]


@pytest.mark.parametrize("holder", HOLDERS, ids=lambda holder: type(holder).__name__)
def test_the_repr_of_an_object_holding_a_secret_leaves_it_out(holder: object) -> None:
    assert "SECRET" not in repr(holder) and "SECRET" not in str(holder)
    assert type(holder).__name__.lstrip("_") in repr(holder)  # still says what it is
