"""Channel adapters: one module per target system, behind the ``Channel`` Protocol, built by ``type``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from bridge import redaction
from bridge.channels.base import Channel, ChannelContext, ChannelFactory, ChannelResult, FindsItems, FoundItem
from bridge.config import ChannelSettings, Problem, channel_variable, config_error, validation_problems
from bridge.errors import ConfigError

__all__ = [
    "Channel",
    "ChannelContext",
    "ChannelFactory",
    "ChannelResult",
    "ChannelType",
    "FindsItems",
    "FoundItem",
    "build_channel",
    "channel_options",
    "channel_options_model",
    "channel_problems",
    "channel_types",
]


@dataclass(frozen=True, slots=True)
class ChannelType:
    """One entry of the registry: the adapter's options model, its factory, and whether its channels are
    ``element_scoped`` and ``finds_items`` (``FindsItems``: searched when an element is deleted in Kordiam), for a
    caller that has the channel's settings but builds no channel: ``element --kordiam``."""

    options: type[BaseModel]
    create: ChannelFactory
    element_scoped: bool = False
    finds_items: bool = False

    @classmethod
    def of(cls, options: type[BaseModel], create: ChannelFactory, adapter: type[Channel]) -> ChannelType:
        """The entry of ``adapter``'s class, which says whether it is element-scoped and finds items."""
        return cls(options, create, adapter.element_scoped, issubclass(adapter, FindsItems))


def channel_types() -> dict[str, ChannelType]:
    """The built-in registry: every ``type`` a ``[[channels]]`` table may name."""
    # Imported here so that an adapter's dependencies load only when the registry is consulted.
    from bridge.channels import folder, kordiam_platform, kordiam_webhook, mailchimp, newsml, wordpress

    return {
        "folder": ChannelType.of(folder.FolderOptions, folder.create, folder.FolderChannel),
        "wordpress": ChannelType.of(wordpress.WordPressOptions, wordpress.create, wordpress.WordPressChannel),
        "newsml": ChannelType.of(newsml.NewsMLOptions, newsml.create, newsml.NewsMLChannel),
        "mailchimp": ChannelType.of(mailchimp.MailchimpOptions, mailchimp.create, mailchimp.MailchimpChannel),
        "kordiam-webhook": ChannelType.of(
            kordiam_webhook.KordiamWebhookOptions, kordiam_webhook.create, kordiam_webhook.KordiamWebhookChannel
        ),
        "kordiam-platform": ChannelType.of(
            kordiam_platform.KordiamPlatformOptions, kordiam_platform.create, kordiam_platform.KordiamPlatformChannel
        ),
    }


def channel_options(
    settings: ChannelSettings, *, index: int = 0, types: Mapping[str, ChannelType] | None = None
) -> BaseModel:
    """The adapter's own keys, validated by its model (secrets become ``SecretStr``).

    ``types``: the registry to build from (default: ``channel_types()``; tests add their own adapters).
    """
    types = channel_types() if types is None else types
    kind = types.get(settings.type)
    if kind is None:
        known = ", ".join(sorted(types))
        raise ConfigError(f"channels[{index}].type", f"unknown channel type {settings.type!r} (known: {known})")
    try:
        return kind.options.model_validate(settings.options)
    except ValidationError as error:
        prefix, common = f"channels[{index}]", ChannelSettings.model_fields
        raise config_error(error, prefix=prefix, model=kind.options, known_beside=common) from None


def channel_options_model(type_name: str) -> type[BaseModel] | None:
    """The options model of channels of ``type_name`` (None: no such type): what ``load_settings`` reads a
    channel's secrets by when the command does not validate its channels."""
    kind = channel_types().get(type_name)
    return None if kind is None else kind.options


def channel_problems(settings: ChannelSettings, index: int, *, secrets: bool = True) -> list[Problem]:
    """Everything wrong with one channel's table: an unknown type, the adapter's own keys.

    ``secrets=False`` (operator commands, which never call the channel) lets missing secrets pass; a missing
    secret is otherwise reported with the variable that sets it.
    """
    kind = channel_types().get(settings.type)
    if kind is None:
        known = ", ".join(sorted(channel_types()))
        return [Problem(f"channels[{index}].type", f"unknown channel type {settings.type!r} (known: {known})")]
    try:
        kind.options.model_validate(settings.options)
    except ValidationError as error:
        common = ChannelSettings.model_fields
        problems = validation_problems(error, kind.options, prefix=f"channels[{index}]", known_beside=common)
        return [
            Problem(p.key, p.message, True, channel_variable(settings.name, p.key.split(".", 1)[1]))
            if p.missing_secret
            else p
            for p in problems
            if secrets or not p.missing_secret
        ]
    return []


def build_channel(
    settings: ChannelSettings,
    context: ChannelContext,
    *,
    index: int = 0,
    types: Mapping[str, ChannelType] | None = None,
) -> Channel:
    """Validate the adapter's own keys and build it; a problem names the key as ``channels[i].key``. Its secrets
    are remembered for redaction (``bridge.redaction``)."""
    types = channel_types() if types is None else types
    options = channel_options(settings, index=index, types=types)
    redaction.SECRETS.remember_secrets(options)
    try:
        return types[settings.type].create(settings, options, context)
    except ConfigError as error:  # an adapter's start-up check names its own key
        raise ConfigError(f"channels[{index}].{error.key}", error.problem) from None
