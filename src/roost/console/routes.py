"""The console's pages and its sign-in endpoints (``/console/...``; ``/`` redirects here).

Pages are shells rendered on the server with what they must show at once (the user, the
theme, the CSRF token, the object a URL names after a row-level-security check); their
modules then call the JSON API with the session cookie.  Sign-in, second factor, passkey
and sign-out live here because they set or clear the cookie; they call identity's own
services, so throttling, audit and two-factor rules are the API's.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match

from roost.agents import catalog as agent_catalog
from roost.agents import personas as agent_personas
from roost.agents import runs as agent_runs
from roost.chat import sessions as chat_sessions
from roost.codeversions import service as code_versions
from roost.console.deps import (
    SECURITY_HEADERS,
    PageRoute,
    Viewer,
    asset,
    clear_session_cookie,
    login_redirect,
    render,
    safe_next,
    set_session_cookie,
    viewer,
)
from roost.context import current_context
from roost.debates import service as debate_service
from roost.errors import NotFound
from roost.http.auth import check_csrf
from roost.http.deps import DbSession
from roost.http.routing import RoostRouter
from roost.identity import passkeys
from roost.identity import sessions as identity_sessions
from roost.identity.config import OPEN_REGISTRATION, IdentityConfig
from roost.identity.routes import identity_config
from roost.identity.schemas import LoginIn, MfaIn, PasskeyLoginFinishIn
from roost.principal import Principal
from roost.system_settings import runtime
from roost.tools import registry as tool_registry
from roost.workflows import runs as workflow_runs
from roost.workflows import service as workflow_service

router = RoostRouter(prefix="/console", tags=["console"], include_in_schema=False,
                     route_class=PageRoute)
root_router = RoostRouter(tags=["console"], include_in_schema=False)
Config = Annotated[IdentityConfig, Depends(identity_config)]


@root_router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


# --- static files ------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str, request: Request) -> Response:
    found = asset(name)
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    data, etag, media_type = found
    cache = "no-cache" if name.endswith(".js") else "public, max-age=3600"  # see asset_url
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == f'"{etag}"':
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


# --- sign-in -----------------------------------------------------------------------------


def _client(device_name: str | None = None) -> identity_sessions.ClientInfo:
    ctx = current_context()
    return identity_sessions.ClientInfo(ctx.ip_address, ctx.user_agent,
                                        device_name or "web console", "desktop")


def _signed_in(request: Request, issued: identity_sessions.IssuedTokens) -> JSONResponse:
    response = JSONResponse({"signed_in": True, "user": {"id": str(issued.user.id),
                                                         "username": issued.user.username}})
    set_session_cookie(response, request, user_id=issued.user.id, session_id=issued.session_id,
                       expires_at=issued.refresh_expires_at)
    return response


@router.get("/login")
async def login_page(request: Request, session: DbSession) -> Response:
    if await viewer(request, session) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return render(request, "login.html", viewer=None,
                  next=safe_next(request.query_params.get("next")))


@router.get("/register")
async def register_page(request: Request, session: DbSession) -> Response:
    return render(request, "register.html", viewer=await viewer(request, session),
                  open_registration=await runtime.get(  # the override, as sign-up applies it
                      session, OPEN_REGISTRATION, (await identity_config(request)).open_registration))


@router.post("/session")
async def sign_in(body: LoginIn, request: Request, session: DbSession, cfg: Config) -> Response:
    check_csrf(request)
    result = await identity_sessions.login(session, cfg, login=body.login, password=body.password,
                                           client=_client(body.device_name))
    if isinstance(result, identity_sessions.MfaRequired):
        return JSONResponse({"signed_in": False, "mfa_token": result.mfa_token,
                             "methods": result.methods, "expires_in": result.expires_in})
    return _signed_in(request, result)


@router.post("/session/2fa")
async def sign_in_second_factor(body: MfaIn, request: Request, session: DbSession,
                                cfg: Config) -> Response:
    check_csrf(request)
    issued = await identity_sessions.complete_mfa(session, cfg, mfa_token=body.mfa_token,
                                                  code=body.code, client=_client())
    return _signed_in(request, issued)


@router.post("/session/passkey/begin")
async def passkey_begin(request: Request, session: DbSession, cfg: Config) -> Response:
    check_csrf(request)
    challenge_id, options = await passkeys.begin_login(session, cfg)
    return JSONResponse({"challenge_id": str(challenge_id), "options": options})


@router.post("/session/passkey")
async def passkey_finish(body: PasskeyLoginFinishIn, request: Request, session: DbSession,
                         cfg: Config) -> Response:
    check_csrf(request)
    issued = await passkeys.finish_login(session, cfg, challenge_id=body.challenge_id,
                                         credential=body.credential,
                                         client=_client(body.device_name))
    return _signed_in(request, issued)


@router.post("/logout")
async def sign_out(request: Request, session: DbSession) -> Response:
    """Ends the server-side session (the cookie is worthless from now on) and clears it."""
    check_csrf(request)
    signed_in = await viewer(request, session)
    if signed_in is not None:
        await identity_sessions.logout(session, signed_in.principal)
    response = RedirectResponse("/console/login", status_code=303)
    clear_session_cookie(response)
    return response


# --- pages -------------------------------------------------------------------------------

Check = Callable[[Any, Principal, uuid.UUID], Awaitable[object]]


async def _page(
    request: Request, session: DbSession, template: str, *, admin: bool = False,
    check: Check | None = None, object_id: str | None = None, **context: Any,
) -> Response:
    """A signed-in page; ``check`` loads what the URL names as the viewer (404 page when it
    does not exist for them, whoever else it belongs to)."""
    who = await viewer(request, session)
    if who is None:
        return login_redirect(request)
    if admin and not who.is_admin:
        return not_found_page(request, who, "This page is for administrators.")
    if check is not None:
        try:
            ident = uuid.UUID(object_id or "")
            await check(session, who.principal, ident)
        except (ValueError, NotFound):
            return not_found_page(request, who)
        context["object_id"] = str(ident)
    return render(request, template, viewer=who, **context)


def not_found_page(request: Request, who: Viewer | None, message: str | None = None) -> Response:
    return render(request, "error.html", viewer=who, status_code=404, title="Not found",
                  message=message or "There is nothing here, or it is not yours to see.")


@router.get("/")
async def home(request: Request, session: DbSession) -> Response:
    if await viewer(request, session) is None:
        return login_redirect(request)
    return RedirectResponse("/console/chat", status_code=303)


@router.get("/chat")
async def chat_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "chat.html", object_id=None)


@router.get("/chat/{session_id}")
async def chat_session_page(session_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "chat.html", check=chat_sessions.get_session,
                       object_id=session_id)


@router.get("/agents")
async def agents_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "agents.html")


@router.get("/agents/{agent_id}")
async def agent_page(agent_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "agent.html", check=agent_catalog.get_agent,
                       object_id=agent_id)


@router.get("/personas")
async def personas_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "personas.html")


@router.get("/personas/{persona_id}")
async def persona_page(persona_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "persona.html", check=agent_personas.get_persona,
                       object_id=persona_id)


@router.get("/runs/{run_id}")
async def run_page(run_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "run.html", check=agent_runs.get_run, object_id=run_id)


@router.get("/documents")
async def documents_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "documents.html")


@router.get("/memory")
async def memory_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "memory.html")


@router.get("/tools")
async def tools_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "tools.html")


@router.get("/tools/{tool_id}")
async def tool_page(tool_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "tool.html", check=tool_registry.get_tool,
                       object_id=tool_id)


@router.get("/calendar")
async def calendar_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "calendar.html")


@router.get("/prompts")
async def prompts_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "prompts.html")


@router.get("/projects")
async def projects_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "workspace.html")


@router.get("/tasks-board")
async def tasks_board_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "workspace.html")  # the same page: board first


@router.get("/debates")
async def debates_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "debates.html")


@router.get("/debates/{debate_id}")
async def debate_page(debate_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "debate.html", check=debate_service.get_debate,
                       object_id=debate_id)


@router.get("/code")
async def code_versions_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "code_versions.html")


@router.get("/code/{version_id}")
async def code_version_page(version_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "code_version.html", check=code_versions.get_version,
                       object_id=version_id)


@router.get("/workflows")
async def workflows_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "workflows.html")


@router.get("/workflows/{workflow_id}")
async def workflow_page(workflow_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "workflow.html", check=workflow_service.get_workflow,
                       object_id=workflow_id)


@router.get("/workflow-runs/{run_id}")
async def workflow_run_page(run_id: str, request: Request, session: DbSession) -> Response:
    return await _page(request, session, "workflow_run.html", check=workflow_runs.read_run,
                       object_id=run_id)


@router.get("/billing")
async def billing_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "billing.html")


@router.get("/profile")
async def profile_page(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "profile.html")


ADMIN_PAGES = ("users", "groups", "providers", "queue", "audit", "usage", "billing",
               "limits", "settings")


@router.get("/admin")
async def admin_home() -> RedirectResponse:
    return RedirectResponse("/console/admin/users", status_code=303)


@router.get("/settings")
async def settings_page() -> RedirectResponse:
    """The runtime settings live with the other administration pages."""
    return RedirectResponse("/console/admin/settings", status_code=303)


@router.get("/admin/{section}")
async def admin_page(section: str, request: Request, session: DbSession) -> Response:
    if section not in ADMIN_PAGES:
        return not_found_page(request, await viewer(request, session))
    return await _page(request, session, f"admin_{section}.html", admin=True, section=section)


@router.get("/{rest:path}")
async def unknown_page(rest: str, request: Request, session: DbSession) -> Response:
    canonical = _page_without_slash(request)
    if canonical is not None:  # /console/chat/ (a bookmark, a hand-typed URL): the page
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(canonical + query, status_code=307)
    return not_found_page(request, await viewer(request, session))


def _page_without_slash(request: Request) -> str | None:
    """The path without its trailing slash when another console route serves it: this
    catch-all matched first, so the framework's own trailing-slash redirect never ran.
    A path (never a URL built from the Host header), under /console."""
    path = request.url.path
    if not path.endswith("/") or path.rstrip("/") in ("", "/console"):
        return None
    stripped = path.rstrip("/")
    scope = {**request.scope, "path": stripped, "method": "GET"}
    for route in router.routes:  # the console's own, their paths under /console
        if getattr(route, "endpoint", None) is unknown_page:
            continue
        if isinstance(route, BaseRoute) and route.matches(scope)[0] is Match.FULL:
            return stripped
    return None


__all__ = ["SECURITY_HEADERS", "root_router", "router"]
