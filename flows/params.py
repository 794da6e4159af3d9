"""Flow parameters as pydantic models: the Prefect UI renders them as forms with these descriptions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Profile = Literal["quick", "default"]


class RoleRun(BaseModel):
    """Train, evaluate and maybe promote one role."""

    role: str = Field(description="A configured role, e.g. ceo, cfo, coo, tool-agent.")
    profile: Profile = Field(default="default", description="Training recipe profile: quick (minutes) or default (nightly).")
    force: bool = Field(default=False, description="Train even when the role has fewer new pairs than its min_new_pairs.")


class IngestRun(BaseModel):
    """Store new feedback files."""

    paths: list[str] = Field(default_factory=list, description="Feedback files or directories (local paths or fsspec URLs); the inbox ($ROLEFORGE_HOME/inbox) when empty.")


class RollbackRun(BaseModel):
    """Move a role's champion back to the previous version."""

    role: str = Field(description="The role whose champion goes back to its previous version.")


class SelfLearningRun(BaseModel):
    """The whole loop: ingest new feedback, then improve every role."""

    feedback: list[str] = Field(default_factory=list, description="Feedback files or directories (local paths or fsspec URLs) to ingest first; the inbox ($ROLEFORGE_HOME/inbox) when empty.")
    roles: list[str] | None = Field(default=None, description="Roles to improve; all configured roles when empty.")
    profile: Profile = Field(default="default", description="Training recipe profile: quick (minutes) or default (nightly).")
    force: bool = Field(default=False, description="Train every role even when it has fewer new pairs than its min_new_pairs.")


class TuneRun(BaseModel):
    """Search one role's training recipe under its promotion gate; the best passing recipe is saved for its trainings."""

    role: str = Field(description="A configured role, e.g. ceo, cfo, coo, tool-agent.")
    trials: int = Field(default=8, ge=1, description="Trials to run now; a study resumed from earlier tunes keeps its trials.")
    profile: Profile = Field(default="default", description="Recipe profile the trials start from: quick (minutes) or default (nightly).")
    seed: int = Field(default=0, ge=0, description="Seed of the sampler (TPE), for a repeatable search.")
