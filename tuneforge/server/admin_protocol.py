"""The admin API's objects (`/v1/admin/keys`): API keys as an admin key sees them. Never the key itself, except
once, in the answer that creates it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ApiKeyCreate(BaseModel):
    project: str = Field(min_length=1, max_length=200, description="The key's project (created if new).")
    admin: bool = Field(False, description="Also let the new key manage every project's keys.")


class ApiKeyObject(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    project: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    admin: bool
    created_at: int
    revoked_at: int | None = None


class ApiKeyCreated(ApiKeyObject):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyObject]
