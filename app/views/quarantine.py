"""Quarantine pages: list held mail by kind, look at it safely, act on it."""

from __future__ import annotations

from flask import (abort, current_app, flash, g, redirect, render_template,
                   request, url_for)

from app import settings_of, spool_of
from app.access import local_path, login_required
from app.views.ui import bp
from app.views.why import why_args
from core import quarantine
from core.quarantine import QuarantineError


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


def _back(kind: str = ""):
    target = local_path(request.form.get("back"))
    if target:
        return redirect(target)
    return redirect(url_for("ui.quarantine_list", kind=kind or None))


@bp.route("/quarantine")
@login_required
def quarantine_list():
    """Quarantine items of one kind (or all), held ones by default."""
    kind = request.args.get("kind", "")
    state = request.args.get("state", "held")
    try:
        page = quarantine.list_items(kind, state, _page_number(),
                                     current_app.config["PAGE_SIZE"])
    except QuarantineError as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.quarantine_list"))
    return render_template("quarantine/list.html", page=page, kind=kind, state=state,
                           kinds=quarantine.KINDS, states=quarantine.STATES,
                           held=quarantine.counts(),
                           can_learn=quarantine.bayes_function("learn") is not None)


@bp.route("/quarantine/<int:item_id>")
@login_required
def quarantine_detail(item_id):
    """One quarantined message: header fields and text, nothing rendered."""
    try:
        item = quarantine.get_item(item_id)
    except QuarantineError as exc:
        return render_template("error.html", status=exc.status,
                               message=str(exc)), exc.status
    view = envelope = None
    problem = None
    if item.state == "held":
        try:
            envelope, data = quarantine.read(spool_of(current_app), item)
            view = quarantine.preview(data, item.message.qid)
        except QuarantineError as exc:
            problem = str(exc)
    return render_template("quarantine/detail.html", item=item, view=view,
                           envelope=envelope, problem=problem,
                           **why_args(current_app, item.message),
                           can_learn=quarantine.bayes_function("learn") is not None)


def _act(item_id, action, done):
    # done: the notice ("{qid}" and "{id}" filled in), or a function of the
    # item giving it.
    try:
        item = action()
    except QuarantineError as exc:
        flash(str(exc), "error")
        return _back()
    if callable(done):
        done = done(item)
    flash(done.format(qid=item.message.qid, id=item.id), "info")
    return _back(item.kind)


@bp.route("/quarantine/<int:item_id>/release", methods=("POST",))
@login_required
def quarantine_release(item_id):
    """Send a held message on to its recipients."""
    spool = spool_of(current_app)
    return _act(item_id, lambda: quarantine.release(spool, item_id, g.user.username),
                "Released {qid}: it is queued for delivery.")


@bp.route("/quarantine/<int:item_id>/delete", methods=("POST",))
@login_required
def quarantine_delete(item_id):
    """Remove a held message for good."""
    spool = spool_of(current_app)
    return _act(item_id, lambda: quarantine.delete(spool, item_id, g.user.username),
                "Deleted {qid}.")


@bp.route("/quarantine/<int:item_id>/learn", methods=("POST",))
@login_required
def quarantine_learn(item_id):
    """Teach the Bayes filter that this message is spam, or that it is not."""
    kind = request.form.get("as", "")
    if kind not in ("spam", "ham"):
        abort(400, description="say what the message is: as=spam or as=ham")
    as_spam = kind == "spam"
    spool = spool_of(current_app)
    settings = settings_of(current_app)
    what = "spam" if as_spam else "not spam"
    return _act(item_id,
                lambda: quarantine.learn(spool, item_id, as_spam, g.user.username,
                                         settings),
                lambda item: (f"Learned {{qid}} as {what}." if item.learned else
                              f"{{qid}} was already learned as {what}; nothing "
                              "changed."))
