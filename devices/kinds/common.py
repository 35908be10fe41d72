"""Types more than one kind's attributes use."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Label = Annotated[str, Field(min_length=1, max_length=64)]
