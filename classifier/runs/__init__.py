"""Training runs: their configuration, the Celery tasks that execute them, progress rows,
charts, pages and API.

Rooms: config.py (run configuration), reporter.py (DbReporter), charts.py, services.py (writes:
create, enqueue, claim, execute, cancel, reap), selectors.py (reads), forms.py, views.py, api.py,
tasks.py (thin Celery tasks). Calls datasets (splits), versions (registering a model) and
serving (calibration) through their services and selectors; never their views or api.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""
