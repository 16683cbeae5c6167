"""The mail data management screen (seed 000, SPEC B2–B5, A9) and its JSON API.

Server-rendered pages (Jinja2, no JS build) plus `/api/...` JSON twins, all over
`automail.management`. Every route needs an Airflow login: reading needs DAG read
access (`requires_access_dag("GET")`: role viewer and up with the simple auth
manager), acting needs DAG edit access (`requires_access_dag("PUT")`: role user and
up), switching `mail_server_stopped` needs configuration edit access (role op and
up). Anonymous callers get 401 and no data; acting forms are CSRF-checked. Buttons a
role cannot use are shown disabled with the reason, never as a way to a 403.

Inside Airflow the screen lives in an iframe without `allow-modals`, so nothing here
uses window.confirm/alert/prompt: sending, resending and deleting first answer with
a confirmation page (how many mails, which filter, whether sending is paused or
stopped) whose button repeats the request with `confirmed=1`.

Store and SMTP work never runs on the API server's event loop: handlers are plain
`def` (FastAPI's thread pool) or read the body asynchronously and hand the work to
the thread pool (`run_in_threadpool`), so a slow relay cannot freeze the Airflow UI.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from airflow.api_fastapi.core_api.security import (
    GetUserDep,
    requires_access_configuration,
    requires_access_dag,
)
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from automail import settings
from automail.db import session_factory
from automail.management import actions
from automail.management.detail import MailNotFound, get_detail
from automail.management.export import export_csv
from automail.management.history import send_history
from automail.management.search import (
    ALL,
    FilterError,
    MailFilter,
    local_minute,
    matching_ids,
    parse_filter,
    search,
    with_page,
    zone_label,
)
from automail.models import Shop, StaffAction
from automail.states import ACTION_FROM, KIND_LABELS, MAIL_KINDS, MAIL_STATUSES, ROW_ACTION_LABEL
from automail_ui import csrf, i18n, sending_state

URL_PREFIX = "/automail"
READ = [Depends(requires_access_dag("GET"))]
ACT = [Depends(requires_access_dag("PUT"))]
OPERATE = [Depends(requires_access_configuration("PUT"))]  # role op and up
BULK_STATUSES = ("unsent", "error", "held")  # rows with a checkbox (seed 000 item 12 + held)
CONFIRM_ACTIONS = ("send", "resend", "delete")  # irreversible: confirmed in the page first
SERVER_SWITCH = "mail_server_stopped"

app = FastAPI(title="Automail mail data", docs_url=None, redoc_url=None, openapi_url=None)
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


def _factory() -> sessionmaker[Session]:
    return session_factory()


def _session() -> Iterator[Session]:
    with _factory()() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


def _tz(session: Session) -> str:
    return str(settings.get(session, "ui_timezone"))


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _can(user: Any, what: str) -> bool:
    """Whether the Airflow auth manager lets `user` act ("act") or operate ("operate")."""
    if user is None:
        return False
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    if what == "operate":
        return bool(manager.is_authorized_configuration(method="PUT", user=user))
    return bool(manager.is_authorized_dag(method="PUT", user=user))


def _role(user: Any) -> str:
    return str(getattr(user, "role", None) or "viewer").lower()


def _page(request: Request, name: str, user: Any, code: int = 200, **ctx: Any) -> HTMLResponse:
    username = user.get_name() if user is not None else ""
    tz = ctx.get("tz", "UTC")
    lang = i18n.pick(request)
    t = i18n.translator(lang)
    zone = zone_label(tz)
    root = _root(request)
    path = request.url.path
    here_params = {k: v for k, v in request.query_params.items() if k not in ("done", "error")}
    here = (path[len(root) :] if path.startswith(root) else path) or "/"
    if request.method == "POST":  # a confirmation page: come back to where the form was
        here = "/"
    elif here_params:
        here += "?" + urlencode(here_params)
    ctx.setdefault("tab", "")
    html = templates.get_template(name).render(
        root=root,
        code=code,
        here=here,
        messages=i18n.MESSAGES,
        user=username,
        role=_role(user),
        can_act=_can(user, "act"),
        can_operate=_can(user, "operate"),
        lang=lang,
        t=t,
        zone=zone,
        csrf_token=csrf.make_token(username) if username else "",
        minute=lambda v: local_minute(v, tz),
        when=lambda v: "" if v is None else f"{local_minute(v, tz)} {zone.split(' ')[0]}",
        kind_labels=KIND_LABELS,
        **ctx,
    )
    return HTMLResponse(html, status_code=code)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> Any:
    """HTML callers get a readable page (with a login link on 401); API callers JSON."""
    wants_html = "text/html" in request.headers.get(
        "accept", ""
    ) and not request.url.path.startswith(f"{_root(request)}/api/")
    if not wants_html:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )
    login = "/auth/login?" + urlencode({"next": str(request.url)})
    lang = i18n.pick(request)
    html = templates.get_template("error.html").render(
        root=_root(request),
        user="",
        lang=lang,
        t=i18n.translator(lang),
        code=exc.status_code,
        detail=exc.detail,
        login=login,
    )
    return HTMLResponse(html, status_code=exc.status_code)


# ---------------------------------------------------------------- helpers


def _filter(session: Session, params: dict[str, Any]) -> MailFilter:
    return parse_filter(params, tz=_tz(session))


def _shops(session: Session) -> list[tuple[str, str]]:
    return [(c, n) for c, n in session.execute(select(Shop.code, Shop.name).order_by(Shop.code))]


def _notice(session: Session, staff_action_id: str | None) -> dict[str, Any] | None:
    """The outcome of the action just done, read back from its audit row (not the URL)."""
    if not staff_action_id or not staff_action_id.isdigit():
        return None
    row = session.get(StaffAction, int(staff_action_id))
    if row is None:
        return None
    detail = row.detail or {}
    return {
        "id": row.id,
        "actor": row.actor,
        "action": row.action,
        "count": row.count,
        "at": row.at,
        "requested": detail.get("requested", row.count),
        "refused": detail.get("refused", []),
        "refused_count": detail.get("refused_count", 0),
        "sent": detail.get("sent"),
        "failed": detail.get("failed"),
        "new_mail_id": detail.get("new_mail_id"),
        "switch_to": detail.get("to") if row.action == SERVER_SWITCH else None,
    }


def _run_action(
    session: Session,
    action: str,
    ids: Sequence[int | str],
    actor: str,
    audit: dict[str, Any] | None = None,
) -> actions.ActionResult:
    if action in actions.SEND_ACTIONS:
        return actions.send(_factory(), ids, actor, action=action, audit=audit)
    if action not in actions.TARGET:
        raise actions.ActionError(
            f"action: {action!r} is not one of {', '.join(actions.ALL_ACTIONS)}"
        )
    result = actions.change_status(session, action, ids, actor, audit=audit)
    session.commit()
    return result


def _all_matching(
    session: Session, action: str, params: dict[str, Any], expected: Any
) -> tuple[list[int], dict[str, Any]]:
    """Ids for "select all matching the search", refusing if the search has changed.

    The count the person confirmed (`expected`) must still be the search's count."""
    f = _filter(session, params)
    all_ids = matching_ids(session, f)
    try:
        expected_total = int(str(expected)[:20])
    except (TypeError, ValueError):
        raise actions.ActionError(f"expected_total: {expected!r} is not a number") from None
    if len(all_ids) != expected_total:
        raise actions.ActionError(
            f"the search now matches {len(all_ids)} mail(s), not the {expected_total} shown; "
            "nothing was done: search again and retry"
        )
    allowed = set(ACTION_FROM.get(action, ()))
    ids = matching_ids(session, f, statuses=tuple(allowed)) if allowed else []
    return ids, {"scope": "all_matching", "filter": f.describe(), "matched": len(all_ids)}


# ---------------------------------------------------------------- pages


@app.get("/", response_class=HTMLResponse, dependencies=READ)
def search_page(request: Request, user: GetUserDep, session: SessionDep) -> HTMLResponse:
    params = dict(request.query_params)
    tz = _tz(session)
    ctx: dict[str, Any] = {
        "tz": tz,
        "state": sending_state.read(session),
        "shops": _shops(session),
        "statuses": MAIL_STATUSES,
        "kinds": MAIL_KINDS,
        "params": params,
        "notice": _notice(session, params.get("done")),
        "error": params.get("error"),
        "row_action": ROW_ACTION_LABEL,
        "bulk_statuses": BULK_STATUSES,
        "result": None,
        "errors": [],
    }
    try:
        f = _filter(session, params)
        # A body search counts its matches exactly on request (it tests every body).
        result = search(session, f, exact=not f.body or params.get("count") == "exact")
    except FilterError as exc:
        return _page(request, "search.html", user, code=400, **{**ctx, "errors": exc.errors})
    query = urlencode(f.as_params())
    ctx.update(
        result=result,
        filter=f,
        query=query,
        exact_query=urlencode({**f.as_params(), "count": "exact"}),
        prev_query=urlencode(with_page(f, f.page - 1).as_params()) if f.page > 1 else None,
        next_query=urlencode(with_page(f, f.page + 1).as_params()) if result.has_next else None,
        sort_query={
            s: urlencode({**f.as_params(), "sort": s, "page": "1"})
            for s in ("created_desc", "created_asc")
        },
    )
    return _page(request, "search.html", user, **ctx)


@app.get("/mails/{mail_id}", response_class=HTMLResponse, dependencies=READ)
def detail_page(
    request: Request, mail_id: int, user: GetUserDep, session: SessionDep
) -> HTMLResponse:
    try:
        detail = get_detail(session, mail_id)
    except MailNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    params = dict(request.query_params)
    return _page(
        request,
        "detail.html",
        user,
        tz=_tz(session),
        mail=detail,
        state=sending_state.read(session),
        notice=_notice(session, params.get("done")),
        error=params.get("error"),
        actions_allowed=actions.allowed_actions(detail.status),
    )


@app.get("/mails/{mail_id}/copy", response_class=HTMLResponse, dependencies=ACT)
def copy_page(
    request: Request, mail_id: int, user: GetUserDep, session: SessionDep
) -> HTMLResponse:
    try:
        detail = get_detail(session, mail_id)
    except MailNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return _page(
        request,
        "copy.html",
        user,
        tz=_tz(session),
        mail=detail,
        state=sending_state.read(session),
        to=request.query_params.get("to", detail.to_address),
        error=request.query_params.get("error"),
    )


@app.get("/history", response_class=HTMLResponse, dependencies=READ)
def history_page(request: Request, user: GetUserDep, session: SessionDep) -> HTMLResponse:
    shop = request.query_params.get("shop") or None
    raw_limit = request.query_params.get("limit") or None
    errors: list[str] = []
    limit = None
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            errors.append(f"limit: {raw_limit!r} is not a whole number")
    rows = []
    if not errors:
        try:
            rows = send_history(session, shop=shop, limit=limit)
        except (LookupError, ValueError) as exc:
            errors.append(str(exc).strip("'\""))
    return _page(
        request,
        "history.html",
        user,
        code=400 if errors else 200,
        tab="history",
        tz=_tz(session),
        rows=rows,
        shops=_shops(session),
        shop=shop or "",
        limit=limit or settings.get(session, "history_limit"),
        errors=errors,
    )


@app.get("/export.csv", dependencies=READ)
def export(request: Request, session: SessionDep) -> FileResponse:
    try:
        f = _filter(session, dict(request.query_params))
    except FilterError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    fd, name = tempfile.mkstemp(prefix="automail-export-", suffix=".csv")
    os.close(fd)
    try:
        export_csv(session, f, name)
    except BaseException as exc:  # never leave a temp file behind
        os.unlink(name)
        if isinstance(exc, FilterError):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        raise
    stamp = datetime.now().strftime("%Y%m%d-%H%M")
    return FileResponse(
        name,
        media_type="text/csv; charset=utf-8",
        filename=f"mails-{stamp}.csv",
        background=BackgroundTask(os.unlink, name),
    )


# ---------------------------------------------------------------- form actions


def _back(request: Request, target: str, **params: Any) -> RedirectResponse:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    sep = "&" if "?" in target else "?"
    url = f"{_root(request)}{target}{sep + urlencode(clean) if clean else ''}"
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def _safe_next(value: str | None) -> str:
    """Only our own pages: a path under this app, never another host."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _form_fields(form: Any) -> list[tuple[str, str]]:
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


def _requested(fields: list[tuple[str, str]]) -> tuple[str, str, list[str]]:
    """(scope, action, ids) of an action form: one row, the ticked rows, or all matching."""
    form = dict(fields)
    if form.get("row"):
        action, _, mail_id = form["row"].partition(":")
        return "row", action, [mail_id]
    if form.get("all_matching"):
        return "all_matching", form["all_matching"], []
    return "bulk", form.get("bulk") or "", [v for k, v in fields if k == "ids"]


def _confirm_page(
    request: Request, user: Any, session: Session, fields: list[tuple[str, str]]
) -> HTMLResponse:
    """The in-page confirmation: what will happen, to how many mails, sending state."""
    scope, action, ids = _requested(fields)
    described = None
    if scope == "all_matching":
        params = {k[2:]: v for k, v in fields if k.startswith("f_")}
        f = _filter(session, params)
        allowed = tuple(ACTION_FROM.get(action, ()))
        count = len(matching_ids(session, f, statuses=allowed)) if allowed else 0
        described = ", ".join(f"{k}={v}" for k, v in f.describe().items()) or "(no filter)"
        # The exact count the person confirms; refused later if the search changed.
        fields = [(k, v) for k, v in fields if k != "expected_total"]
        fields.append(("expected_total", str(len(matching_ids(session, f)))))
    else:
        count = len(ids)
    return _page(
        request,
        "confirm.html",
        user,
        tz=_tz(session),
        state=sending_state.read(session),
        action=action,
        count=count,
        described=described,
        fields=[(k, v) for k, v in fields if k not in ("csrf_token", "confirmed")],
        back=_safe_next(dict(fields).get("next")),
    )


def _act_on_form(actor: str, fields: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """Run the form's action (thread pool); (page to go back to, its query)."""
    form = dict(fields)
    back = _safe_next(form.get("next"))
    filter_params = {k[2:]: v for k, v in fields if k.startswith("f_")}
    with _factory()() as session:
        try:
            scope, action, picked = _requested(fields)
            if scope == "all_matching":
                ids, audit = _all_matching(
                    session, action, filter_params, form.get("expected_total")
                )
                result = _run_action(session, action, ids, actor, audit)
            else:
                if not picked:
                    raise actions.ActionError(f"{action or 'action'}: no mail selected")
                result = _run_action(session, action, picked, actor)
        except (actions.ActionError, FilterError, LookupError) as exc:
            session.rollback()
            return back, {"error": str(exc)}
    return back, {"done": result.staff_action_id}


@app.post("/actions", dependencies=ACT, response_model=None)
async def action_form(request: Request, user: GetUserDep) -> RedirectResponse | HTMLResponse:
    form = await request.form()
    actor = user.get_name()
    csrf.check_form(request, form.get("csrf_token"), actor)  # type: ignore[arg-type]
    fields = _form_fields(form)
    action = _requested(fields)[1]
    if action in CONFIRM_ACTIONS and form.get("confirmed") != "1":

        def confirm() -> HTMLResponse:
            with _factory()() as session:
                try:
                    return _confirm_page(request, user, session, fields)
                except FilterError as exc:
                    return _page(request, "error.html", user, code=400, detail=str(exc))

        return await run_in_threadpool(confirm)
    back, params = await run_in_threadpool(_act_on_form, actor, fields)
    return _back(request, back, **params)


@app.post("/sending/server", dependencies=OPERATE)
async def server_switch_form(request: Request, user: GetUserDep) -> RedirectResponse:
    """Ops switch `mail_server_stopped` from the screen (audited like every action)."""
    form = await request.form()
    actor = user.get_name()
    csrf.check_form(request, form.get("csrf_token"), actor)  # type: ignore[arg-type]
    back = _safe_next(form.get("next"))  # type: ignore[arg-type]
    wanted = form.get("stopped")
    if wanted not in ("0", "1"):
        return _back(request, back, error=f"stopped: {str(wanted)[:20]!r} is not 0 or 1")
    staff_action_id = await run_in_threadpool(_switch_server, actor, wanted == "1")
    return _back(request, back, done=staff_action_id)


def _switch_server(actor: str, stopped: bool) -> int:
    from automail.db import take_write_lock

    with _factory().begin() as session:
        take_write_lock(session)
        before = bool(settings.get(session, SERVER_SWITCH))
        settings.put(session, SERVER_SWITCH, stopped, actor=actor)
        row = StaffAction(
            at=datetime.now(UTC),
            actor=actor,
            action=SERVER_SWITCH,
            count=0,
            detail={"setting": SERVER_SWITCH, "from": before, "to": stopped, "via": "screen"},
        )
        session.add(row)
        session.flush()
        return row.id


def _copy(actor: str, mail_id: int, to: str, send_it: bool) -> tuple[str, dict[str, Any]]:
    try:
        result = actions.copy_and_send(_factory(), mail_id, to, actor, send_it=send_it)
    except actions.CopySavedNotSent as exc:  # saved, not sent: both said, on the copy's page
        return f"/mails/{exc.new_mail_id}", {"error": str(exc)}
    except (actions.ActionError, LookupError) as exc:
        return f"/mails/{mail_id}/copy", {"error": str(exc), "to": to}
    return f"/mails/{result.new_mail_id}", {"done": result.staff_action_id}


@app.post("/mails/{mail_id}/copy", dependencies=ACT)
async def copy_form(request: Request, mail_id: int, user: GetUserDep) -> RedirectResponse:
    form = await request.form()
    actor = user.get_name()
    csrf.check_form(request, form.get("csrf_token"), actor)  # type: ignore[arg-type]
    to = str(form.get("to") or "")
    target, params = await run_in_threadpool(_copy, actor, mail_id, to, form.get("send") == "1")
    return _back(request, target, **params)


# ---------------------------------------------------------------- JSON API


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _bad_request(exc: Exception) -> HTTPException:
    errors = exc.errors if isinstance(exc, FilterError) else [str(exc)]
    return HTTPException(status.HTTP_400_BAD_REQUEST, {"errors": errors})


@app.get("/api/mails", dependencies=READ)
def api_search(request: Request, session: SessionDep) -> dict[str, Any]:
    params = dict(request.query_params)
    try:
        f = _filter(session, params)
        result = search(session, f, exact=not f.body or params.get("count") == "exact")
    except FilterError as exc:
        raise _bad_request(exc) from None
    return {
        "filter": f.as_params(),
        "total": result.total,
        "total_capped": result.capped,  # a body search not counted: more than total match
        "total_label": result.total_label,
        "page": f.page,
        "pages": result.pages,
        "rows": [
            _jsonable({**asdict(r), "created_minute": local_minute(r.created_at, f.tz)})
            for r in result.rows
        ],
    }


@app.get("/api/mails/{mail_id}", dependencies=READ)
def api_detail(mail_id: int, session: SessionDep) -> dict[str, Any]:
    try:
        detail = get_detail(session, mail_id)
    except MailNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    out = _jsonable(asdict(detail))
    out["row_action"] = detail.row_action
    out["allowed_actions"] = actions.allowed_actions(detail.status)
    return out


def _api_act(actor: str, body: dict[str, Any]) -> actions.ActionResult:
    action = str(body.get("action") or "")
    with _factory()() as session:
        try:
            if "filter" in body:
                if not isinstance(body["filter"], dict):
                    raise actions.ActionError("filter: expected an object of search fields")
                ids, audit = _all_matching(
                    session, action, body["filter"], body.get("expected_total")
                )
                return _run_action(session, action, ids, actor, audit)
            given = body.get("ids")
            if not isinstance(given, list) or not given:
                raise actions.ActionError(f"ids: {given!r} is not a non-empty list of mail ids")
            return _run_action(session, action, given, actor)
        except (actions.ActionError, FilterError, LookupError) as exc:
            session.rollback()
            raise _bad_request(exc) from None


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: expected a JSON object")
    return body


@app.post("/api/actions", dependencies=ACT)
async def api_action(request: Request, user: GetUserDep) -> JSONResponse:
    csrf.check_json(request)
    body = await _json_object(request)
    result = await run_in_threadpool(_api_act, user.get_name(), body)
    code = 200 if result.done or not result.refused_count else 409
    return JSONResponse(result.as_dict(), status_code=code)


def _api_copy_sync(actor: str, mail_id: int, body: dict[str, Any]) -> dict[str, Any]:
    try:
        result = actions.copy_and_send(
            _factory(),
            mail_id,
            str(body.get("to") or ""),
            actor,
            send_it=bool(body.get("send", True)),
        )
    except actions.CopySavedNotSent as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, {"errors": [str(exc)], "new_mail_id": exc.new_mail_id}
        ) from None
    except (actions.ActionError, LookupError) as exc:
        raise _bad_request(exc) from None
    return result.as_dict()


@app.post("/api/mails/{mail_id}/copy", dependencies=ACT)
async def api_copy(request: Request, mail_id: int, user: GetUserDep) -> dict[str, Any]:
    csrf.check_json(request)
    body = await _json_object(request)
    return await run_in_threadpool(_api_copy_sync, user.get_name(), mail_id, body)


@app.get("/api/sending", dependencies=READ)
def api_sending(session: SessionDep) -> dict[str, Any]:
    return _jsonable(asdict(sending_state.read(session)))


@app.get("/api/history", dependencies=READ)
def api_history(
    session: SessionDep, shop: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    try:
        rows = send_history(session, shop=shop, limit=limit)
    except (LookupError, ValueError) as exc:
        raise _bad_request(exc) from None
    return {"count": len(rows), "rows": [_jsonable(asdict(r)) for r in rows]}


from automail_ui.report_web import router as report_router  # noqa: E402 (uses names above)

app.include_router(report_router)  # type: ignore[has-type]  # defined after this module's names

__all__ = ["ALL", "URL_PREFIX", "app"]
