"""Model versions: registering a run's model, promote, rollback, promote-if-better.

Rooms: services.py (writes), selectors.py (reads), views.py, api.py. Versions never call runs;
a version's split key comes from datasets.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""
