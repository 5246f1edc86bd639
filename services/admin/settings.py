"""Settings of ``sync-airbnb admin``."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.settings import CsvList, DatabaseSettings, NatsSettings, SecretSettings


class AdminSettings(DatabaseSettings, NatsSettings, SecretSettings):
    admin_api_keys: CsvList = Field(validation_alias="ADMIN_API_KEYS")
    admin_host: str = Field(default="0.0.0.0", validation_alias="ADMIN_HOST")
    admin_port: int = Field(default=8000, ge=0, le=65535, validation_alias="ADMIN_PORT")

    @field_validator("admin_api_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("is empty; give at least one API key (comma-separated)")
        if any(len(k) < 8 for k in v):
            raise ValueError("holds a key shorter than 8 characters")
        return v
