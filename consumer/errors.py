"""One small error hierarchy. Every error carries a stable `code` that ends up in `DeliveryStatus.reason.code`
and a human `message` that ends up in logs; neither ever carries a secret."""

from __future__ import annotations


class SmsConsumerError(Exception):
    """Base of every error the service raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(SmsConsumerError):
    """The configuration is invalid. `problems` lists `path: reason` lines."""

    code = "config_error"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration {source}:\n" + "\n".join(f"  {p}" for p in problems))


class EventError(SmsConsumerError):
    """A send-request cannot be processed as it is: it is rejected and dead-lettered, never sent."""

    code = "invalid_event"


class RenderError(EventError):
    """A send-request's values cannot be rendered into the provider's request."""

    code = "render_error"


class DispatchError(SmsConsumerError):
    """A request could not be dispatched to the provider (not the provider's refusal)."""

    code = "dispatch_error"
