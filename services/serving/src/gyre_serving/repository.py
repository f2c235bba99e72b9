"""The model versions being served: one per model name, swapped by replacing a reference."""

from __future__ import annotations

from gyre_serving.domain.errors import InvalidRequestError, ModelNotFoundError
from gyre_serving.domain.runtime import Runtime


class ModelRepository:
    """Which :class:`Runtime` answers for each model name.

    Swapping is one dict assignment on the event loop: a request holds the model object it
    resolved, so requests in flight finish on the old version while new ones get the new one.

    Args:
        alias: the alias being served; a request may name it instead of a version.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._models: dict[str, Runtime] = {}

    def get(self, name: str) -> Runtime | None:
        """The model served under ``name``, if any."""
        return self._models.get(name)

    def models(self) -> list[Runtime]:
        """Every served model, by name."""
        return [self._models[name] for name in sorted(self._models)]

    def resolve(self, name: str, version: str = "") -> Runtime:
        """The model that answers a request for ``name`` at ``version``.

        Args:
            version: empty or the served alias for the alias's version, or a version number.

        Raises:
            ModelNotFoundError: no such model here, or not that version.
            InvalidRequestError: ``version`` is neither a number nor the served alias.
        """
        model = self._models.get(name)
        if model is None:
            served = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(f"model {name!r} is not served here (serving: {served})")
        if version in ("", self.alias):
            return model
        if not version.isdigit():
            raise InvalidRequestError(
                f"model version {version!r} is neither a version number nor the served alias {self.alias!r}"
            )
        if int(version) != model.version:
            raise ModelNotFoundError(
                f"version {version} of model {name!r} is not served here; "
                f"{self.alias!r} is version {model.version}"
            )
        return model

    def put(self, model: Runtime) -> Runtime | None:
        """Serve ``model`` for its name from now on; returns the model it replaced."""
        previous = self._models.get(model.name)
        self._models[model.name] = model
        return previous

    def remove(self, name: str) -> Runtime | None:
        """Stop serving ``name``; returns the model that was served."""
        return self._models.pop(name, None)
