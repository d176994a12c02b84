"""Every notification shape Kordiam or AWS plumbing can deliver decodes; anything else is poison."""

import json
from datetime import UTC, datetime

import pytest

from bridge.pipeline.notification import Event, PoisonMessage, decode_notification, resync_notification
from tests.fixtures import load


@pytest.mark.parametrize(
    ("body", "attributes", "element_id", "event"),
    [
        ({"id": 12}, {}, 12, None),
        ({"elementId": 12}, {}, 12, None),
        ({"id": "12"}, {}, 12, None),
        ({"id": 12, "event": "deleted"}, {}, 12, Event.DELETED),
        ({"id": 12, "event": "ELEMENT_UPDATED"}, {}, 12, Event.UPDATED),
        ({"id": 12}, {"event": "created"}, 12, Event.CREATED),
        ({"id": 12, "event": "update"}, {}, 12, Event.UPDATED),
        ({"id": 2**63 - 1}, {}, 2**63 - 1, None),
    ],
)
def test_id_notifications(
    body: dict[str, object], attributes: dict[str, str], element_id: int, event: Event | None
) -> None:
    notification = decode_notification(json.dumps(body), attributes)
    assert (notification.element_id, notification.event, notification.shape) == (element_id, event, "id")


def test_global_export_body_carries_its_modification_date() -> None:
    notification = decode_notification(json.dumps(load("seed001_full")))
    assert notification.element_id == 13
    assert notification.shape == "element"
    assert notification.modification_date == datetime(2009, 11, 10, 11, 12, tzinfo=UTC)


def test_sns_envelope() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "x",
        "Message": json.dumps({"id": 44}),
        "MessageAttributes": {"event": {"Type": "String", "Value": "deleted"}},
    }
    notification = decode_notification(json.dumps(envelope))
    assert (notification.element_id, notification.event, notification.shape) == (44, Event.DELETED, "sns/id")


def test_eventbridge_envelope_takes_the_event_from_detail_type() -> None:
    envelope = {"version": "0", "source": "kordiam", "detail-type": "Element Created", "detail": {"elementId": 9}}
    notification = decode_notification(json.dumps(envelope))
    assert (notification.element_id, notification.event, notification.shape) == (9, Event.CREATED, "eventbridge/id")


def test_sns_wrapping_a_global_export_body() -> None:
    envelope = {"Type": "Notification", "Message": json.dumps(load("seed001_update"))}
    notification = decode_notification(json.dumps(envelope))
    assert notification.element_id == 123456 and notification.shape == "sns/element"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "body is not JSON"),
        ("", "body is not JSON"),
        ("[1, 2]", "body is a JSON array, not an object"),
        ("42", "body is a JSON number, not an object"),
        ("null", "body is a JSON null, not an object"),
        ('"123"', "body is a JSON string, not an object"),
        ("true", "body is a JSON boolean, not an object"),
        ('{"foo": 1}', "no element id"),
        ('{"id": -3}', "not a positive element id"),
        ('{"id": true}', "`id` is not a positive element id: true"),
        ('{"id": null}', "`id` is not a positive element id: null"),
        ('{"id": 3.5}', "not a positive element id"),
        ('{"id": 99999999999999999999}', "larger than the largest element id (9223372036854775807)"),
        ('{"elementId": "9223372036854775808"}', "`elementId` 9223372036854775808 is larger than the largest"),
        ('{"id": 9223372036854775808, "title": "x"}', "`id` 9223372036854775808 is larger than the largest"),
        # More digits than int() reads (4300): its ValueError was no PoisonMessage (a 500 at the ingress).
        ('{"elementId": "' + "9" * 5000 + '"}', "`elementId` " + "9" * 40 + "… is larger than the largest element id"),
        ('{"id": 3, "event": "exploded"}', "unknown event"),
        ('{"id": 3, "event": 7}', "event is not a string"),
        ('{"Type": "Notification", "Message": "nope"}', "SNS envelope: Message is not JSON"),
        ('{"Type": "Notification", "Message": {"id": 1}}', "Message is not a string"),
        ('{"id": 3, "publications": [{"id": 1}]}', "element body does not parse"),
        ("[" * 100_000, "body is not JSON"),
    ],
)
def test_poison(body: str, reason: str) -> None:
    with pytest.raises(PoisonMessage) as raised:
        decode_notification(body)
    assert reason in raised.value.reason


@pytest.mark.parametrize(
    ("body", "element_id"),
    [
        ('{"id": 3, "event": "exploded"}', 3),
        ('{"elementId": "4", "event": 7}', 4),
        ('{"id": 5, "publications": [{"id": 1}]}', 5),
        ('{"Type": "Notification", "Message": "{\\"id\\": 6, \\"event\\": \\"moved\\"}"}', 6),
        ('{"id": -3}', None),
        ("not json", None),
    ],
)
def test_poison_names_its_element_when_the_body_does(body: str, element_id: int | None) -> None:
    # An operator asking `element 3 --dlq` (or `dlq redrive --element 3`) must find the dead letter of a
    # notification whose id was readable even though the rest of it was not.
    with pytest.raises(PoisonMessage) as raised:
        decode_notification(body)
    assert raised.value.element_id == element_id


def test_envelopes_nested_too_deeply_are_poison() -> None:
    body: object = {"id": 1}
    for _ in range(5):
        body = {"Type": "Notification", "Message": json.dumps(body)}
    with pytest.raises(PoisonMessage, match="nested too deeply"):
        decode_notification(json.dumps(body))


def test_a_requeued_elements_first_parking_times_travel_with_its_notification() -> None:
    since = {
        "web": datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC),
        "print-2": datetime(2026, 12, 6, 10, 0, tzinfo=UTC),
    }
    body, attributes = resync_notification(7, source="parked", parked_since=since)
    assert attributes["parked-since"] == "print-2=2026-12-06T10:00:00.000000+00:00,web=2026-12-06T09:30:15.123456+00:00"
    assert decode_notification(body, attributes).parked_since == since
    # A pair that does not read (a hand-made message) is left out: the element is parked as new, nothing worse.
    odd = {**attributes, "parked-since": "web=yesterday,=2026-12-06T10:00:00+00:00,print=2026-12-06T10:00:00"}
    assert decode_notification(body, odd).parked_since == {}


def test_the_force_attribute_asks_for_every_channel_to_be_rewritten() -> None:
    body, attributes = resync_notification(7, source="replay", force=True)
    assert decode_notification(body, attributes).force is True
    assert decode_notification(*resync_notification(7, source="replay")).force is False
    assert decode_notification('{"id": 7}', {"force": "yes"}).force is False  # only the exact value counts


def test_a_reason_names_a_few_keys_each_cut_short() -> None:
    # The reason becomes a dead letter's failure.reason header: a 30 KB key must not make it 30 KB.
    body = {"a" * 30_000: 1, **{f"key{n}": n for n in range(100)}}
    with pytest.raises(PoisonMessage) as raised:
        decode_notification(json.dumps(body))
    reason = raised.value.reason
    assert reason.startswith("no element id") and len(reason) < 400
    assert f"keys: {'a' * 40}…, key0, key1, key10, key11, … 96 more)" in reason
