"""Datasets: importing archives and folders, the validation report, the train/validation split,
versions, merging corrections, charts, pages and API.

Rooms: archives.py (safe extraction), report.py (checking a folder, the stratified split),
charts.py, services.py (writes), selectors.py (reads), forms.py, views.py, api.py, tasks.py.
Imports classifier.models and training/; never another domain's views or api.
"""
