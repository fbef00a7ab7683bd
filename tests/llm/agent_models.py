"""Model "agent:<slug>" of /v1/chat/completions (and /v1/models/agent:<slug>), registered
as the agents' start-up does (roost.agents.startup): the ASGI ``client`` fixture runs no
lifespan, so without this fixture such a model never reaches the agent code.  Import the
fixture into a test module to use it."""

from __future__ import annotations

import pytest
from fastapi import FastAPI


@pytest.fixture
def agent_models(app: FastAPI) -> None:
    from roost.agents.run_routes import openai_agent_describer, openai_agent_handler

    app.state.openai_model_handlers = {"agent": openai_agent_handler(app)}
    app.state.openai_model_describers = {"agent": openai_agent_describer(app)}
