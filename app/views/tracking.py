"""The tracking center: search messages, see one message's whole path."""

from __future__ import annotations

from flask import abort, current_app, render_template, request

from app.access import login_required
from app.views.ui import bp
from app.views.why import why_args
from core import stats
from core.models import Message, QuarantineItem, Recipient


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


@bp.route("/tracking")
@login_required
def tracking_list():
    """Messages matching the search form, newest first."""
    filters = stats.Filters.from_mapping(request.args)
    error = None
    try:
        page = stats.search(filters, _page_number(), current_app.config["PAGE_SIZE"])
    except stats.SearchError as exc:
        error = str(exc)
        page = stats.Page(items=[], total=0, page=1, per_page=1)
    status = 400 if error else 200
    return render_template("tracking/list.html", filters=filters, page=page,
                           error=error, verdicts=stats.VERDICTS,
                           statuses=stats.STATUSES, args=filters.active()), status


@bp.route("/tracking/<qid>")
@login_required
def tracking_detail(qid):
    """Everything known about one queue id."""
    msg = Message.get_or_none(Message.qid == qid.upper()[:32])
    if msg is None:
        abort(404, f"No message with queue id {qid[:32]}.")
    recipients = list(msg.recipients.order_by(Recipient.id))
    items = list(msg.quarantine.order_by(QuarantineItem.id))
    return render_template("tracking/detail.html", msg=msg, recipients=recipients,
                           items=items, **why_args(current_app, msg))
