"""Characters ``str.isdigit`` calls digits but that are not ASCII are never read as ids or numbers: ``int`` refuses
"²" (a ValueError where a clear answer belongs) and reads "٣" as 3 (the wrong element or post)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.channels import auth, kordiam_platform, wordpress
from bridge.kordiam.models import Ref
from bridge.state.leases import LeaseOwner, owner_is_gone

NOT_ASCII = ["²", "٣", "１２"]  # superscript two, Arabic-Indic three, full-width twelve


@pytest.mark.parametrize("text", NOT_ASCII)
def test_a_reference_is_not_a_non_ascii_number(text: str) -> None:
    with pytest.raises(ValidationError):
        Ref.model_validate(text)
    assert not Ref(id=3, name="Sport").matches(text)


@pytest.mark.parametrize("text", NOT_ASCII)
def test_a_cms_answer_with_non_ascii_digits_is_no_post_id(text: str) -> None:
    assert wordpress._post_id(text) is None
    assert kordiam_platform._post_id(text) == text  # kept as the CMS's own text id, not read as a number


@pytest.mark.parametrize("text", NOT_ASCII)
def test_a_token_lifetime_in_non_ascii_digits_is_the_default(text: str) -> None:
    assert auth._lifetime(text) == auth._lifetime(None)


@pytest.mark.parametrize("text", NOT_ASCII)
def test_a_lease_owner_with_a_non_ascii_pid_or_start_is_unreadable_not_a_crash(text: str) -> None:
    # A lease row another program (or a damaged file) wrote: the owner is unknown, so never reported gone.
    assert LeaseOwner.decode(f"token/host/{text}/12") is None
    assert LeaseOwner.decode(f"token/host/12/{text}") == LeaseOwner("token", "host", 12, None)
    assert not owner_is_gone(f"token/host/{text}/12")
