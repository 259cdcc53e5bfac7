class DomainError(Exception):
    """A request that would break an invariant; the message is fit to show a user.

    `field` names the input at fault, so forms and the API can put the message next to it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field or "non_field_errors": [self.message]}


class MissingInputError(DomainError):
    """A value this user must give was left out (the API answers 400 by field even though it was not sent)."""
