"""The start page: today's counts and what is waiting."""

from __future__ import annotations

from flask import current_app, render_template

from app import spool_of
from app.access import login_required
from app.views.ui import bp
from core import quarantine, stats
from core.spool import STATES


@bp.route("/")
@login_required
def dashboard_index():
    """Today's counts, held quarantine items and queue depths."""
    spool = spool_of(current_app)
    queues = {state: len(spool.list(state)) for state in STATES}
    return render_template("dashboard.html", counts=stats.today(),
                           held=quarantine.counts(), queues=queues,
                           day=stats.start_of_day())
