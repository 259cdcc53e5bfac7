class RefusedError(Exception):
    """The services refused a request: it would break an invariant, or its input is wrong.

    The message is fit to show a user. (Called DomainError until issue 14: in a mail server whose
    central model is a mail Domain, that name said the wrong thing.)

    `field` names the input at fault, so forms and the API can put the message next to it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field or "non_field_errors": [self.message]}


class MissingInputError(RefusedError):
    """A value this user must give was left out (the API answers 400 by field even though it was not sent)."""
