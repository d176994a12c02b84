"""Which publication a route exports (platform and status) and which it merely carries (platform)."""

from pathlib import Path

from bridge.channels.folder import FolderChannel
from bridge.kordiam.models import Element
from bridge.pipeline.routing import Route
from tests.unit.kordiam.test_models import V2_ELEMENT


def test_routes_by_platform_and_status() -> None:
    web, print_ = Element.model_validate(V2_ELEMENT).publications
    channel = FolderChannel("web", Path("/tmp/unused"))
    assert Route(channel, frozenset({99003})).exports(web)
    assert not Route(channel, frozenset({99003})).exports(print_)
    assert Route(channel, frozenset({99003}), ("no status",)).exports(web)
    assert not Route(channel, frozenset({99003}), (5, "Published")).exports(web)
    assert Route(channel, frozenset({99003}), (5,)).carries(web)  # carried, though its status does not export
