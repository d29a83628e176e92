"""The JSON API under /api/v1: the operations of the pages, for scripts.

Errors are JSON objects ``{"error": "<what to do>", "status": <code>}``.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from app import settings_of, spool_of
from app.access import api_auth, api_error, csrf_token
from core import quarantine, stats, tracking
from core.models import Message, QuarantineItem, Recipient
from core.quarantine import QuarantineError

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _reasons(msg: Message) -> dict:
    """The filter's Bayes probability and clues of a message, for JSON."""
    return {"bayes_probability": msg.bayes_probability,
            "spam_clues": tracking.read_clues(msg.spam_clues)}


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise QuarantineError(f"{name} must be a whole number, not {raw[:20]!r}")


@bp.errorhandler(QuarantineError)
def _quarantine_error(exc: QuarantineError):
    return api_error(exc.status, str(exc))


@bp.errorhandler(stats.SearchError)
def _search_error(exc: stats.SearchError):
    return api_error(400, str(exc))


@bp.route("/session")
@api_auth
def api_session():
    """Who is calling, and the CSRF token session callers must send."""
    data = {"user": g.user.username, "via": "token" if g.via_token else "session"}
    if not g.via_token:
        data["csrf_token"] = csrf_token()
    return jsonify(data)


@bp.route("/stats")
@api_auth
def api_stats():
    """Today's counts and held quarantine items per kind."""
    return jsonify({"today": stats.today(), "held": quarantine.counts()})


@bp.route("/messages")
@api_auth
def api_messages():
    """Search tracked messages; the filters of the tracking page."""
    filters = stats.Filters.from_mapping(request.args)
    page = stats.search(filters, _int_arg("page", 1), _int_arg("per_page", 50))
    return jsonify({
        "total": page.total, "page": page.page, "per_page": page.per_page,
        "messages": [stats.message_dict(m) for m in page.items],
    })


@bp.route("/messages/<qid>")
@api_auth
def api_message(qid):
    """One message with its recipients and quarantine items."""
    msg = Message.get_or_none(Message.qid == qid.upper()[:32])
    if msg is None:
        return api_error(404, f"no message with queue id {qid[:32]!r}")
    data = stats.message_dict(msg, list(msg.recipients.order_by(Recipient.id)))
    data.update(_reasons(msg))
    data["quarantine"] = [quarantine.item_dict(quarantine.get_item(item.id))
                          for item in msg.quarantine.order_by(QuarantineItem.id)]
    return jsonify(data)


@bp.route("/quarantine")
@api_auth
def api_quarantine():
    """Quarantine items, filtered by kind and state (held by default)."""
    page = quarantine.list_items(request.args.get("kind", ""),
                                 request.args.get("state", "held"),
                                 _int_arg("page", 1), _int_arg("per_page", 50))
    return jsonify({
        "total": page.total, "page": page.page, "per_page": page.per_page,
        "items": [quarantine.item_dict(item) for item in page.items],
    })


@bp.route("/quarantine/<int:item_id>")
@api_auth
def api_quarantine_item(item_id):
    """One item; for a held one also its header fields and text."""
    item = quarantine.get_item(item_id)
    data = quarantine.item_dict(item)
    data.update(_reasons(item.message))
    if item.state == "held":
        envelope, raw = quarantine.read(spool_of(current_app), item)
        view = quarantine.preview(raw, item.message.qid)
        data["recipients"] = envelope.recipients
        data["headers"] = [list(pair) for pair in view.headers]
        data["text"] = view.text
        data["html_source"] = view.html_source
        data["parts"] = [vars(part) for part in view.parts]
        data["defects"] = view.defects
    return jsonify(data)


@bp.route("/quarantine/<int:item_id>/release", methods=("POST",))
@api_auth
def api_quarantine_release(item_id):
    """Queue a held message for delivery."""
    item = quarantine.release(spool_of(current_app), item_id, g.user.username)
    return jsonify(quarantine.item_dict(item))


@bp.route("/quarantine/<int:item_id>/delete", methods=("POST",))
@api_auth
def api_quarantine_delete(item_id):
    """Remove a held message."""
    item = quarantine.delete(spool_of(current_app), item_id, g.user.username)
    return jsonify(quarantine.item_dict(item))


@bp.route("/quarantine/<int:item_id>/learn", methods=("POST",))
@api_auth
def api_quarantine_learn(item_id):
    """Train the Bayes filter: body {"as": "spam"} or {"as": "ham"}."""
    body = request.get_json(silent=True) or {}
    verdict = body.get("as") if isinstance(body, dict) else None
    if verdict not in ("spam", "ham"):
        return api_error(400, 'send a JSON body {"as": "spam"} or {"as": "ham"}')
    item = quarantine.learn(spool_of(current_app), item_id, verdict == "spam",
                            g.user.username, settings_of(current_app))
    return jsonify({**quarantine.item_dict(item), "learned": item.learned})
