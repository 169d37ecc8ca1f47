"""The WhatsApp providers the service speaks, by the name a tenant's `channel` column holds.

A provider is its folder (`channels/<name>/`), its settings (a base of `ChannelSettings`, the
fields in `server.settings.Settings`) and one line in `PROVIDERS`. The webhook routes every
provider's paths (`server.api.webhooks`); the jobs take a tenant's channel from `channel_for`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from channels.base import Channel, Webhooks
from channels.cloud.channel import CloudChannel, CloudWebhooks
from channels.cloud.settings import CloudSettings
from channels.twilio.channel import TwilioChannel, TwilioWebhooks
from channels.twilio.settings import TwilioSettings
from store.records import Tenant


class ChannelSettings(TwilioSettings, CloudSettings, Protocol):
    """What every provider reads of the service's settings."""


@dataclass(frozen=True)
class Provider:
    """A provider's webhooks, and how to build a tenant's channel through it."""

    webhooks: Webhooks
    channel: Callable[[ChannelSettings, Tenant], Channel]


PROVIDERS: Mapping[str, Provider] = {
    "twilio": Provider(TwilioWebhooks(), TwilioChannel),
    "cloud": Provider(CloudWebhooks(), CloudChannel),
}


class UnknownProvider(LookupError):
    """The tenant's channel names no provider this service has."""


def channel_for(settings: ChannelSettings, tenant: Tenant) -> Channel:
    """Return `tenant`'s channel through its provider."""
    provider = PROVIDERS.get(tenant.channel)
    if provider is None:
        raise UnknownProvider(f"tenant {tenant.slug} uses channel {tenant.channel!r}")
    return provider.channel(settings, tenant)
