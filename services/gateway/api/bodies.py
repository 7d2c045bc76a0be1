"""The three kinds of body the API reads and writes: strict input, PATCH input, output; and the
error body every failure answers with."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.gateway.api.schemarules import ferry_error, null_problem, patch_schema
from services.gateway.api.text import check_value


class Input(BaseModel):
    """A request model: strict types, no unknown fields, and the one text policy (``api/text.py``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text_policy(cls, value: Any) -> Any:
        return check_value(value)


class Patch(Input):
    """A PATCH body: fields left out keep their value; only ``NULLABLE`` ones may be null (clears)."""

    model_config = ConfigDict(json_schema_extra=patch_schema)
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        name = null_problem(data, cls.NULLABLE)
        if name is not None:
            raise ferry_error(f"{name} cannot be null; leave it out to keep its value", loc=name)
        return data


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Output):
    field: str
    message: str
    type: str


class ErrorInfo(Output):
    code: str = Field(description="stable machine-readable code, e.g. NOT_FOUND, INVALID_REF")
    message: str
    field: str | None = Field(description="the request field at fault ('body' for an unreadable body)")
    details: list[ErrorDetail] | None = None


class ErrorResponse(Output):
    error: ErrorInfo
