"""ESP webhook routes: each passes the raw request to its provider's handler and answers in JSON."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter.settings import Settings
from newsletter.tally import Tally
from newsletter.webhooks import WebhookRejected, mailgun, postmark, sendgrid, ses
from subscribers.context import context_of

Handler = Callable[[Settings, Session, dict[str, str], bytes], Tally]
PROVIDERS: dict[str, Handler] = {
    "ses": ses.handle,
    "postmark": postmark.handle,
    "sendgrid": sendgrid.handle,
    "mailgun": mailgun.handle,
}


async def webhook(request: Request) -> Response:
    """Verify and record one provider request; a request not believed gets its status and no detail."""
    handle = PROVIDERS.get(request.path_params["provider"])
    if handle is None:
        raise HTTPException(404)
    context = context_of(request)
    headers, body = dict(request.headers), await request.body()
    try:
        result = await context.run(lambda session: handle(context.settings, session, headers, body))
    except WebhookRejected as error:
        return JSONResponse({"error": str(error)}, status_code=error.status)
    return JSONResponse(
        {
            "recorded": result.recorded,
            "duplicates": result.duplicates,
            "suppressed": result.suppressed,
            "ignored": result.ignored,
            "note": result.note,
        }
    )


routes = [Route("/webhooks/{provider:str}", webhook, methods=["POST"])]
